//! A real cluster: pods reach pods on their node and across nodes, routes are exactly
//! the planned ones, and everything goes away. Needs root.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use common::*;

#[test]
fn pods_reach_pods_on_their_node_and_across_nodes() {
    if !root() {
        return;
    }
    let rt = runtime();
    let name = unique_name("reach");
    let tb = up(&rt, &name, &scenario("two-nodes.yaml"));
    let plan = tb.plan().clone();
    let pod = |n: &str| plan.pod(n).unwrap().clone();
    let (client, web1, web2) = (pod("client-1"), pod("web-1"), pod("web-2"));
    assert_eq!(client.node, web1.node, "client-1 and web-1 share node-1");
    assert_ne!(client.node, web2.node);

    let at1 = serve(&web1.netns, 8080, "web-1");
    let at2 = serve(&web2.netns, 8080, "web-2");
    let port = |a: SocketAddr, ip| SocketAddr::new(IpAddr::V4(ip), a.port());
    // Same node: bridged by cbr0. The server sees the client's own pod IP (no NAT).
    assert_eq!(
        ask(&client.netns, port(at1, web1.ip)).unwrap(),
        format!("web-1 {}", client.ip)
    );
    // Other node: routed through node-1, the underlay and node-2.
    assert_eq!(
        ask(&client.netns, port(at2, web2.ip)).unwrap(),
        format!("web-2 {}", client.ip)
    );
    // The nodes answer on the underlay too.
    let n2 = plan.node("node-2").unwrap();
    let at_node = serve(&n2.netns, 9000, "node-2");
    assert_eq!(
        ask(&plan.node("node-1").unwrap().netns, port(at_node, n2.ip)).unwrap(),
        format!("node-2 {}", plan.node("node-1").unwrap().ip)
    );
    // Nothing listens on port 1: refused at once, not a timeout.
    let refused = ask(&client.netns, SocketAddr::new(IpAddr::V4(web2.ip), 1)).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(tb);
    assert_eq!(traces(&name), Vec::<String>::new());
}

fn ip_in(netns: &str, args: &[&str]) -> String {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

#[test]
fn every_pod_and_node_has_exactly_the_planned_routes_and_settings() {
    if !root() {
        return;
    }
    let rt = runtime();
    let name = unique_name("routes");
    let tb = up(&rt, &name, &scenario("two-nodes.yaml"));
    for pod in &tb.plan().pods {
        let node = tb.plan().node(&pod.node).unwrap();
        assert_eq!(
            ip_in(&pod.netns, &["route"]),
            format!(
                "default via {} dev eth0 \n{} dev eth0 proto kernel scope link src {} \n",
                node.bridge_ip, node.pod_cidr, pod.ip
            ),
            "routes of pod {}",
            pod.name
        );
        let addrs = ip_in(&pod.netns, &["-4", "-br", "addr"]);
        assert!(addrs.contains(&format!("{}/24", pod.ip)), "{addrs}");
        // eth0's peer is a port of the node's cbr0.
        let port = ip_in(&node.netns, &["-br", "link", "show", "master", "cbr0"]);
        assert!(port.contains(&pod.host_veth), "{port}");
    }
    for node in &tb.plan().nodes {
        let other = tb
            .plan()
            .nodes
            .iter()
            .find(|n| n.name != node.name)
            .unwrap();
        let mut routes: Vec<&str> = Vec::new();
        let have = ip_in(&node.netns, &["route"]);
        routes.extend(have.lines());
        routes.sort();
        let mut want = vec![
            "default via 172.18.0.1 dev eth0 ".to_string(),
            format!(
                "{} dev cbr0 proto kernel scope link src {} ",
                node.pod_cidr, node.bridge_ip
            ),
            format!("{} via {} dev eth0 ", other.pod_cidr, other.ip),
            format!(
                "172.18.0.0/24 dev eth0 proto kernel scope link src {} ",
                node.ip
            ),
        ];
        want.sort();
        assert_eq!(routes, want, "routes of {}", node.name);
        let sysctls = run(Command::new("ip").args([
            "netns",
            "exec",
            &node.netns,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
            "net.bridge.bridge-nf-call-iptables",
        ]));
        assert_eq!(sysctls, "1\n1\n", "sysctls of {}", node.name);
    }
    // Each pod sees its own resolv.conf through `ip netns exec`.
    let pod = &tb.plan().pods[0];
    let resolv =
        run(Command::new("ip").args(["netns", "exec", &pod.netns, "cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
}

/// A pod removed leaves its node's bridge at once, even while its namespace lives
/// on. The kernel destroys an unmounted namespace later, by seconds when many go at
/// once; meanwhile a new pod given the same address (and so the same MAC) had its
/// frames sent to the old port, which answered with resets.
#[test]
fn a_removed_pod_leaves_cbr0_at_once_even_while_its_namespace_lives_on() {
    if !root() {
        return;
    }
    let rt = runtime();
    let name = unique_name("unplug");
    let tb = up(&rt, &name, &scenario("two-nodes.yaml"));
    let web = tb.plan().pod("web-1").unwrap().clone();
    let node = tb.plan().node(&web.node).unwrap().netns.clone();
    let ports = || {
        let args = ["-n", &node, "-o", "link", "show", "master", "cbr0"];
        run(Command::new("ip").args(args))
    };
    assert!(ports().contains(&web.host_veth), "{}", ports());
    // Held open, the namespace outlives its unmounting, as it does while the
    // kernel's clean-up lags.
    let held = std::fs::File::open(testbed::netns::netns_path(&web.netns)).unwrap();
    let nl = testbed::netns::open_netlink(&node, rt.handle()).unwrap();
    rt.block_on(testbed::topology::remove_pod(&web, &nl));
    assert!(!testbed::netns::netns_path(&web.netns).exists());
    assert!(!ports().contains(&web.host_veth), "{}", ports());
    drop(held);
    tb.down();
}

#[test]
fn teardown_leaves_nothing_and_never_touches_the_host() {
    if !root() {
        return;
    }
    let host_links = run(Command::new("ip").args(["-o", "link"]));
    let host_routes = run(Command::new("ip").args(["route"]));
    let rt = runtime();
    let name = unique_name("teardown");
    let tb = up(&rt, &name, &scenario("two-nodes.yaml"));
    assert_eq!(
        traces(&name).len(),
        1 + 2 + 4 + 4 + 1,
        "{:?}",
        traces(&name)
    );
    assert_eq!(run(Command::new("ip").args(["-o", "link"])), host_links);
    let report = tb.down();
    assert_eq!(report.namespaces, 7);
    assert_eq!(traces(&name), Vec::<String>::new());
    assert_eq!(run(Command::new("ip").args(["-o", "link"])), host_links);
    assert_eq!(run(Command::new("ip").args(["route"])), host_routes);
}

#[test]
fn a_panic_tears_the_testbed_down() {
    if !root() {
        return;
    }
    let name = unique_name("panic");
    let s = scenario("two-nodes.yaml");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let rt = runtime();
        let _tb = up(&rt, &name, &s);
        assert!(!traces(&name).is_empty());
        panic!("boom");
    }));
    assert!(result.is_err());
    assert_eq!(traces(&name), Vec::<String>::new());
}

#[test]
fn two_testbeds_of_one_scenario_run_at_once_without_meeting() {
    if !root() {
        return;
    }
    let rt = runtime();
    let s = scenario("two-nodes.yaml");
    let (a, b) = (unique_name("twin-a"), unique_name("twin-b"));
    let ta = up(&rt, &a, &s);
    let tb = up(&rt, &b, &s);
    // The same plan, addresses and all, in different namespaces.
    assert_eq!(ta.plan().pods[3].ip, tb.plan().pods[3].ip);
    assert_ne!(ta.plan().pods[3].netns, tb.plan().pods[3].netns);
    let web2 = |t: &testbed::lifecycle::Testbed| t.plan().pod("web-2").unwrap().clone();
    let client = |t: &testbed::lifecycle::Testbed| t.plan().pod("client-1").unwrap().netns.clone();
    let at_a = serve(&web2(&ta).netns, 8080, "a");
    let at_b = serve(&web2(&tb).netns, 8080, "b");
    let ip = web2(&ta).ip;
    let to = |at: SocketAddr| SocketAddr::new(IpAddr::V4(ip), at.port());
    assert!(ask(&client(&ta), to(at_a)).unwrap().starts_with("a "));
    assert!(ask(&client(&tb), to(at_b)).unwrap().starts_with("b "));
    // Taking one down leaves the other working.
    drop(ta);
    assert_eq!(traces(&a), Vec::<String>::new());
    assert!(ask(&client(&tb), to(at_b)).unwrap().starts_with("b "));
}

#[test]
fn a_name_in_use_is_refused() {
    if !root() {
        return;
    }
    let rt = runtime();
    let name = unique_name("dup");
    let s = scenario("two-nodes.yaml");
    let _first = up(&rt, &name, &s);
    let err = rt
        .block_on(testbed::lifecycle::Testbed::up(&name, &s, None))
        .err()
        .unwrap();
    assert!(err.to_string().contains("already running"), "{err}");
    // The running one is untouched.
    assert_eq!(traces(&name).len(), 12);
}
