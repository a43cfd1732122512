//! kube-proxy's behaviour beyond ClusterIP rules, with real traffic: conntrack clean-up
//! for UDP Services that become active, and the labels that keep a Service from it.
//! Needs root.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::running::{apply, from_outside, text, Running};
use common::*;

/// A client on client-1 that sends `hostname` from UDP port 40002 to
/// 10.96.0.77:5353 every 100 ms, and prints the first answer with how long it took;
/// it gives up after 20 s (a stale entry, refreshed by every packet, would outlast
/// that: its 30 s timeout never runs out).
const CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", 40002))
s.settimeout(0.1)
start = time.time()
print("sending", flush=True)
while time.time() - start < 20:
    s.sendto(b"hostname", ("10.96.0.77", 5353))
    try:
        print("answer", s.recv(100).decode().strip(), flush=True)
        sys.exit(0)
    except (socket.timeout, ConnectionRefusedError):
        pass
print("no answer in 20 s", flush=True)
sys.exit(1)
"#;

in_both_modes!(
    a_udp_client_sending_before_its_service_exists_gets_answers_once_it_does,
    in_nftables_mode_a_udp_client_sending_before_its_service_exists_gets_answers,
    "udplate",
    |tb, mode| udp_client_before_its_service(tb, mode == "nftables")
);

/// A UDP client that sends to a ClusterIP before its Service exists gets answers
/// once it does. In iptables mode its flow is in the node's conntrack, un-DNATed,
/// until kube-proxy clears it; in nftables mode (`nftables`) upstream's
/// `cluster-ips-check` drops packets to an unallocated address of the Service
/// CIDR, so no flow is kept (a dropped packet's entry is never confirmed).
fn udp_client_before_its_service(tb: Running, nftables: bool) {
    apply(
        &tb,
        "server",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: udp-server, labels: {app: udp-late}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8081, protocol: UDP}]}\n",
    );
    // The client starts first: 10.96.0.77 is no Service yet, so (iptables mode)
    // its packets leave through the node's default route, un-DNATed, and the
    // node's conntrack keeps that flow.
    let mut client = testbed_bin()
        .args([
            "exec", "-t", &tb.0, "client-1", "--", "python3", "-c", CLIENT,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "sending");
    std::thread::sleep(Duration::from_millis(500));
    let flows = tb.exec(
        "node/node-1",
        &["conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.77"],
    );
    let flows = String::from_utf8_lossy(&flows.stdout);
    if nftables {
        assert_eq!(flows, "", "dropped: no flow is kept");
    } else {
        assert!(
            flows.contains("UNREPLIED"),
            "the stale flow is there: {flows}"
        );
    }
    apply(
        &tb,
        "service",
        "apiVersion: v1\nkind: Service\nmetadata: {name: udp-late}\nspec:\n  clusterIP: 10.96.0.77\n  selector: {app: udp-late}\n  ports: [{port: 5353, targetPort: 8081, protocol: UDP}]\n",
    );
    let status = client.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert_eq!(rest.trim(), "answer udp-server");
}

in_both_modes!(
    a_service_for_another_proxy_gets_no_rules_until_the_label_goes,
    in_nftables_mode_a_service_for_another_proxy_gets_no_rules_until_the_label_goes,
    "optout",
    another_proxy
);

/// The node's rules of kube-proxy in `mode`: the nat table or the nftables table.
fn another_proxy(tb: Running, mode: &str) {
    let svc = |labels: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: elsewhere, labels: {{{labels}}}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    };
    apply(
        &tb,
        "svc",
        &svc("service.kubernetes.io/service-proxy-name: other"),
    );
    tb.wait_synced();
    // Both modes name a Service's rules by namespace/name (comments, chain names).
    for node in ["node-1", "node-2"] {
        let held = tb.rules(node, mode);
        assert!(!held.contains("default/elsewhere"), "{node}:\n{held}");
        assert!(held.contains("default/kubernetes"), "{node}:\n{held}");
    }
    let ip = tb.cluster_ip("elsewhere");
    let out = tb.exec(
        "client-1",
        &["curl", "-s", "-m", "2", &format!("http://{ip}/hostname")],
    );
    assert!(!out.status.success(), "no proxy serves it here");
    // Without the label, this node's kube-proxy takes it.
    apply(&tb, "svc", &svc("app: elsewhere"));
    tb.wait_synced();
    assert!(tb.rules("node-1", mode).contains("default/elsewhere"));
    let out = tb.exec(
        "client-1",
        &["curl", "-s", "-m", "5", &format!("http://{ip}/hostname")],
    );
    let who = String::from_utf8_lossy(&out.stdout);
    assert!(who == "web-1" || who == "web-2", "{who}");
}

#[test]
fn a_local_internal_traffic_policy_serves_only_the_node_with_an_endpoint() {
    if !root() {
        return;
    }
    let tb = Running::up("itplocal");
    apply(
        &tb,
        "local",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: only-here, labels: {app: only-here}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: only-here}\nspec:\n  internalTrafficPolicy: Local\n  selector: {app: only-here}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("only-here", 1);
    let ip = tb.cluster_ip("only-here");
    let url = format!("http://{ip}/hostname");
    // On node-2, its own endpoint answers.
    let out = tb.exec("client-2", &["curl", "-s", "-m", "5", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "only-here");
    // On node-1 there is none: dropped (a timeout, curl's 28), not rejected (7).
    let out = tb.exec("client-1", &["curl", "-s", "-m", "2", &url]);
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    let filter = tb.exec("node/node-1", &["iptables-save", "-t", "filter"]);
    assert!(
        String::from_utf8_lossy(&filter.stdout)
            .contains("\"default/only-here has no local endpoints\" -m tcp --dport 80 -j DROP"),
        "{filter:?}"
    );
}

#[test]
fn node_ports_answer_on_every_node_and_a_local_policy_keeps_the_client_address() {
    if !root() {
        return;
    }
    let tb = Running::up("nodeport");
    apply(
        &tb,
        "np",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: np-server, labels: {app: np}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: np-cluster}\nspec:\n  type: NodePort\n  selector: {app: np}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: np-local}\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  selector: {app: np}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]\n",
    );
    tb.wait_ready("np-cluster", 1);
    tb.wait_ready("np-local", 1);
    let curl = |url: &str, secs: &str| from_outside(&tb, &["curl", "-s", "-m", secs, url]);
    // From outside, on both nodes' addresses; the pod is on node-2 only.
    for node in ["172.18.0.2", "172.18.0.3"] {
        let out = curl(&format!("http://{node}:30080/hostname"), "5");
        assert_eq!(text(&out), "np-server", "{node}: {out:?}");
    }
    // Cluster policy through node-1: masqueraded to node-1's address.
    let out = curl("http://172.18.0.2:30080/clientip", "5");
    assert!(
        text(&out).starts_with("10.244.2.1:") || text(&out).starts_with("172.18.0.2:"),
        "{out:?}"
    );
    // Local policy on node-2: the client's own address is kept.
    let out = curl("http://172.18.0.3:30081/clientip", "5");
    assert!(text(&out).starts_with("172.18.0.1:"), "{out:?}");
    // Local policy on node-1, which has no endpoint: dropped (curl's 28, a timeout).
    let out = curl("http://172.18.0.2:30081/hostname", "2");
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    // From a node itself, to its own address and to localhost.
    for url in [
        "http://172.18.0.2:30080/hostname",
        "http://127.0.0.1:30080/hostname",
    ] {
        let out = tb.exec("node/node-1", &["curl", "-s", "-m", "5", url]);
        assert_eq!(text(&out), "np-server", "{url}: {out:?}");
    }
    // And the rules are upstream's.
    let nat = tb.rules("node-1", "iptables");
    assert!(nat.contains("-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/np-cluster\" -m tcp --dport 30080 -j KUBE-EXT-"), "{nat}");
    let filter = tb.exec("node/node-1", &["iptables-save", "-t", "filter"]);
    assert!(
        String::from_utf8_lossy(&filter.stdout).contains("\"default/np-local has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport 30081 -j DROP"),
        "{filter:?}"
    );
}

#[test]
fn a_deleted_prerouting_jump_is_back_at_the_next_sync() {
    if !root() {
        return;
    }
    let tb = Running::up("jumpback");
    let jump = [
        "iptables",
        "-t",
        "nat",
        "-D",
        "PREROUTING",
        "-m",
        "comment",
        "--comment",
        "kubernetes service portals",
        "-j",
        "KUBE-SERVICES",
    ];
    let out = tb.exec("node/node-1", &jump);
    assert!(out.status.success(), "{out:?}");
    let has_jump = || {
        let out = tb.exec(
            "node/node-1",
            &["iptables", "-t", "nat", "-S", "PREROUTING"],
        );
        String::from_utf8_lossy(&out.stdout).contains("-j KUBE-SERVICES")
    };
    assert!(!has_jump());
    // The next periodic sync (every second) puts it back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !has_jump() {
        assert!(
            std::time::Instant::now() < deadline,
            "the jump did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And a flush of everything (the canaries with it) is a full resync: ClusterIP
    // traffic works again.
    let out = tb.exec("node/node-1", &["nft", "flush", "ruleset"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let name = "kubernetes.default.svc.cluster.local";
        let out = tb.exec("client-1", &["dig", "+short", "+time=1", "+tries=1", name]);
        if out.status.success() && text(&out) == "10.96.0.1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resync after a flush: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_load_balancer_address_answers_from_outside_and_its_health_check_port_tells_the_nodes_apart() {
    if root() {
        load_balancer("lb", "iptables");
    }
}

#[test]
fn in_nftables_mode_a_load_balancer_address_answers_from_outside_and_its_health_check_port_tells_the_nodes_apart(
) {
    if root() {
        load_balancer("lbnft", "nftables");
    }
}

fn load_balancer(what: &str, mode: &str) {
    // A machine of the node network outside the cluster besides the gateway, and a
    // pool of the scenario's own.
    let tb = Running::up_text(
        what,
        &format!("name: lb\ncluster: {{nodes: 2, hosts: [laptop], loadBalancerPool: 172.18.0.100-172.18.0.109, kubeProxy: {{mode: {mode}}}}}\n"),
    );
    apply(
        &tb,
        "lb",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lb-server, labels: {app: lb}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: lb-cluster}\nspec:\n  type: LoadBalancer\n  selector: {app: lb}\n  ports: [{port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: lb-local}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: lb}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("lb-cluster", 1);
    tb.wait_ready("lb-local", 1);
    let svc = |name: &str| tb.json(&["get", "svc", name]);
    let ingress = |name: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = svc(name);
            if let Some(ip) = s["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
                return ip.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no address: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (cluster, local) = (ingress("lb-cluster"), ingress("lb-local"));
    assert_eq!(
        (cluster.as_str(), local.as_str()),
        ("172.18.0.100", "172.18.0.101")
    );
    let curl = |url: &str| from_outside(&tb, &["curl", "-s", "-m", "5", url]);
    let out = curl(&format!("http://{cluster}/hostname"));
    assert_eq!(text(&out), "lb-server", "{out:?}");
    // Local: routed to node-2, the one with the endpoint, and the client's address kept.
    let out = curl(&format!("http://{local}/clientip"));
    assert!(text(&out).starts_with("172.18.0.1:"), "{out:?}");
    // The same from the laptop, 172.18.0.4 (after the gateway and the two nodes),
    // to which the load balancer announces its addresses too.
    let laptop = |url: &str| tb.exec("host/laptop", &["curl", "-s", "-m", "5", url]);
    let out = laptop(&format!("http://{cluster}/hostname"));
    assert_eq!(text(&out), "lb-server", "{out:?}");
    let out = laptop(&format!("http://{local}/clientip"));
    assert!(text(&out).starts_with("172.18.0.4:"), "{out:?}");
    let route = tb.exec("host/laptop", &["ip", "route", "get", &local]);
    assert!(
        text(&route).starts_with(&format!("{local} via 172.18.0.3 dev eth0")),
        "{route:?}"
    );
    // The health check node port, as a cloud load balancer asks it.
    let hc = svc("lb-local")["spec"]["healthCheckNodePort"]
        .as_i64()
        .unwrap();
    let ask = |node: &str| {
        let url = format!("http://{node}:{hc}/");
        from_outside(&tb, &["curl", "-s", "-m", "5", "-w", " %{http_code}", &url])
    };
    assert_eq!(
        text(&ask("172.18.0.3")),
        r#"{"localEndpoints":1,"service":{"name":"lb-local","namespace":"default"},"serviceProxyHealthy":true} 200"#
    );
    assert_eq!(
        text(&ask("172.18.0.2")),
        r#"{"localEndpoints":0,"service":{"name":"lb-local","namespace":"default"},"serviceProxyHealthy":true} 503"#
    );
}

in_both_modes!(
    an_external_ip_answers_from_pods_and_from_outside,
    in_nftables_mode_an_external_ip_answers_from_pods_and_from_outside,
    "extip",
    |tb, _| external_ip(tb)
);

/// A Service with external IP 203.0.113.10, an address of no network of the testbed:
/// pods reach it through their node, and the machine outside once it routes the
/// address to node-1 (as a router in front of a cluster would).
fn external_ip(tb: Running) {
    apply(
        &tb,
        "ext",
        "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  selector: {app: web}\n  externalIPs: [203.0.113.10]\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("ext", 2);
    tb.wait_synced();
    let seen = tb.answers("client-1", "http://203.0.113.10/hostname", 20);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "{seen:?}"
    );
    let route = from_outside(
        &tb,
        &["ip", "route", "add", "203.0.113.10/32", "via", "172.18.0.2"],
    );
    assert!(route.status.success(), "{route:?}");
    let out = from_outside(
        &tb,
        &["curl", "-s", "-m", "5", "http://203.0.113.10/hostname"],
    );
    assert!(["web-1", "web-2"].contains(&text(&out).as_str()), "{out:?}");
    // The Cluster policy masquerades: the endpoint sees a node's address, not 172.18.0.1.
    let out = from_outside(
        &tb,
        &["curl", "-s", "-m", "5", "http://203.0.113.10/clientip"],
    );
    let client = text(&out);
    assert!(
        !client.is_empty() && !client.starts_with("172.18.0.1:"),
        "{out:?}"
    );
}

/// The conditions of pod `pod`'s endpoint in `svc`'s EndpointSlice: (ready,
/// serving, terminating), or None when it is not there.
fn conditions(tb: &Running, svc: &str, pod: &str) -> Option<(bool, bool, bool)> {
    let list = tb.json(&["get", "endpointslices"]);
    list["items"]
        .as_array()?
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .find_map(|e| {
            (e["targetRef"]["name"].as_str() == Some(pod)).then(|| {
                let c = &e["conditions"];
                (
                    c["ready"].as_bool().unwrap_or(false),
                    c["serving"].as_bool().unwrap_or(false),
                    c["terminating"].as_bool().unwrap_or(false),
                )
            })
        })
}

in_both_modes!(
    a_terminating_endpoint_takes_traffic_only_when_no_ready_one_is_left,
    in_nftables_mode_a_terminating_endpoint_takes_traffic_only_when_no_ready_one_is_left,
    "graceful",
    |tb, _| terminating_fallback(tb)
);

/// kube-proxy's fallback to serving terminating endpoints, in `tb`'s mode.
fn terminating_fallback(tb: Running) {
    apply(
        &tb,
        "graceful",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: slow, labels: {app: gr}}\nspec:\n  nodeName: node-2\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {name: main, image: agnhost, args: [netexec, --delay-shutdown=8], ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: quick, labels: {app: gr}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: gr}\nspec:\n  selector: {app: gr}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("gr", 2);
    let url = format!("http://{}/hostname", tb.cluster_ip("gr"));
    // Deleted: `testbed delete` waits until the kubelet has stopped it (8 s).
    let started = std::time::Instant::now();
    let mut deleting = testbed_bin()
        .args(["delete", "pod", "slow", "-t", &tb.0])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(5);
    while conditions(&tb, "gr", "slow") != Some((false, true, true)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            conditions(&tb, "gr", "slow")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Terminating but serving: once the nodes' rules show it, the ready one takes
    // every connection.
    tb.wait_synced();
    for _ in 0..10 {
        let out = tb.exec("client-1", &["curl", "-s", "-m", "2", &url]);
        assert_eq!(text(&out), "quick", "{out:?}");
    }
    // The ready one goes (at once: no delay): the terminating one is all that is
    // left, and kube-proxy falls back to it.
    let out = tb.cli(&["delete", "pod", "quick"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let out = tb.exec("client-1", &["curl", "-s", "-m", "1", &url]);
        if text(&out) == "slow" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no fallback: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "the test ran too slowly to show it"
    );
    // Then its grace ends: the pod is gone and the ClusterIP rejects (curl's 7).
    assert!(deleting.wait().unwrap().success());
    assert!(
        started.elapsed() >= Duration::from_secs(7),
        "it stopped before its delay"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = tb.exec("client-1", &["curl", "-s", "-m", "1", &url]);
        if out.status.code() == Some(7) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
