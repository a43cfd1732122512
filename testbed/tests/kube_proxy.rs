//! kube-proxy's behaviour beyond ClusterIP rules, with real traffic: conntrack clean-up
//! for UDP Services that become active, and the labels that keep a Service from it.
//! Needs root.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::running::Running;
use common::*;

/// Writes `text` as a manifest for `tb` and applies it.
fn apply(tb: &Running, name: &str, text: &str) -> String {
    let file = std::env::temp_dir().join(format!("{}-{name}.yaml", tb.0));
    std::fs::write(&file, text).unwrap();
    let out = tb.ok(&["apply", "-f", &file.display().to_string()]);
    std::fs::remove_file(file).unwrap();
    out
}

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

#[test]
fn a_udp_client_sending_before_its_service_exists_gets_answers_once_it_does() {
    if !root() {
        return;
    }
    let tb = Running::up("udplate");
    apply(
        &tb,
        "server",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: udp-server, labels: {app: udp-late}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8081, protocol: UDP}]}\n",
    );
    // The client starts first: 10.96.0.77 is no Service yet, so its packets leave
    // through the node's default route, un-DNATed, and the node's conntrack keeps
    // that flow.
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
    assert!(
        String::from_utf8_lossy(&flows.stdout).contains("UNREPLIED"),
        "the stale flow is there: {flows:?}"
    );
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

#[test]
fn a_service_for_another_proxy_gets_no_rules_until_the_label_goes() {
    if !root() {
        return;
    }
    let tb = Running::up("optout");
    let svc = |labels: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: elsewhere, labels: {{{labels}}}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    };
    apply(
        &tb,
        "svc",
        &svc("service.kubernetes.io/service-proxy-name: other"),
    );
    tb.wait_synced();
    let nat = |node: &str| {
        let out = tb.exec(&format!("node/{node}"), &["iptables-save", "-t", "nat"]);
        String::from_utf8(out.stdout).unwrap()
    };
    for node in ["node-1", "node-2"] {
        let rules = nat(node);
        assert!(!rules.contains("default/elsewhere"), "{node}:\n{rules}");
        assert!(
            rules.contains("default/kubernetes:https"),
            "{node}:\n{rules}"
        );
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
    assert!(nat("node-1").contains("\"default/elsewhere cluster IP\""));
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
