//! The explanation of a trace from evidence written here (no root, no kernel): what
//! each hop says, the path, and where a failure is placed.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use super::explain::explain;
use super::gather::{Evidence, Request, Source};
use super::World;
use crate::api::{Kind, Object};
use crate::plan::{ClusterSpec, Plan};
use crate::probe::connect::Outcome;
use crate::probe::dns::Answer;

fn object(kind: Kind, v: serde_json::Value) -> Object {
    Object::from_value(kind, v).unwrap()
}

fn pod(name: &str, node: &str, ip: &str) -> Object {
    object(
        Kind::Pod,
        json!({"metadata": {"name": name, "namespace": "default"},
               "spec": {"nodeName": node, "containers": [{"name": "main"}]},
               "status": {"phase": "Running", "podIP": ip,
                          "conditions": [{"type": "Ready", "status": "True"}]}}),
    )
}

/// client on node-1, web-b on node-2 behind web (10.96.0.2), and none without endpoints.
fn world() -> World {
    let plan = Plan::new("t", &ClusterSpec::with_nodes(2), &[]);
    let service = |name: &str, ip: &str, app: &str| {
        object(
            Kind::Service,
            json!({"metadata": {"name": name, "namespace": "default"},
                   "spec": {"clusterIP": ip, "selector": {"app": app},
                            "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
    };
    let slice = object(
        Kind::EndpointSlice,
        json!({"metadata": {"name": "web-abc", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.244.2.2"], "conditions": {"ready": true},
                              "nodeName": "node-2",
                              "targetRef": {"kind": "Pod", "name": "web-b", "namespace": "default"}}]}),
    );
    World::new(
        plan,
        [
            pod("client", "node-1", "10.244.1.2"),
            pod("web-b", "node-2", "10.244.2.2"),
            service("web", "10.96.0.2", "web"),
            service("none", "10.96.0.3", "nothing"),
            slice,
        ],
    )
}

fn source() -> Source {
    Source {
        pod: "default/client".into(),
        ip: "10.244.1.2".parse().unwrap(),
        node: "node-1".into(),
        netns: "tb.t.default.client".into(),
    }
}

fn request(target: &str) -> Request {
    Request {
        from: "client".into(),
        target: target.into(),
        udp: false,
        timeout: Duration::from_secs(2),
    }
}

fn answer(name: &str, data: &str) -> Answer {
    Answer {
        rcode: "NOERROR".into(),
        name: format!("{name}.default.svc.cluster.local."),
        data: vec![data.into()],
        records: vec![format!("{name}.default.svc.cluster.local. 5 A {data}")],
        authority: vec![],
        tried: vec![format!(
            "{name}.default.svc.cluster.local. NOERROR (1 answers)"
        )],
        server: "10.96.0.10:53".parse().unwrap(),
        flags: "qr aa rd".into(),
    }
}

#[test]
fn an_answered_connection_reads_as_the_seed_flow() {
    let ev = Evidence {
        asked: Some(("web".into(), Ok(answer("web", "10.96.0.2")))),
        destination: Some(SocketAddr::from(([10, 96, 0, 2], 80))),
        pod_route: "10.96.0.2 via 10.244.1.1 dev eth0 src 10.244.1.2 uid 0 \\    cache".into(),
        sport: 48338,
        outcome: Some(Outcome::Answered("10.244.1.2:48338".into())),
        printed: vec![
            ("node-1".into(), super::events::tests::CAPTURED.into()),
            ("node-2".into(), String::new()),
        ],
        conntrack: "tcp 6 119 TIME_WAIT src=10.244.1.2 dst=10.96.0.2 sport=48338 dport=80 src=10.244.2.2 dst=10.244.1.2 sport=8080 dport=48338 [ASSURED] mark=0 use=1".into(),
        node_route: Some(("10.244.2.2".parse().unwrap(), "10.244.2.2 via 172.18.0.3 dev eth0 src 172.18.0.2".into())),
        ..Default::default()
    };
    let t = explain(&world(), &source(), &request("web"), &ev);
    assert!(t.ok, "{}", t.text());
    assert_eq!(t.answered.as_deref(), Some("default/web-b"));
    assert_eq!(t.target, "web:80/TCP");
    assert_eq!(
        t.path,
        [
            "pod/default/client",
            "node/node-1",
            "service/default/web",
            "node/node-2",
            "pod/default/web-b"
        ]
    );
    let text = t.text();
    for part in [
        "10.96.0.2 is the ClusterIP of Service default/web",
        "node-1 DNATed the question to 10.244.2.3:53 by nat KUBE-SEP-ZHICQ2ODADGCY7DS",
        "ip route get: 10.96.0.2 via 10.244.1.1 dev eth0 src 10.244.1.2\n",
        "the default route sends it to 10.244.1.1, cbr0 of node-1",
        "DNAT to 10.244.2.2:8080 (pod default/web-b) by nat KUBE-SEP-4EX2N4PG4ASNZOBF",
        "Service default/web: 1 ready endpoints of 1 (10.244.2.2 on node-2)",
        "reply    10.244.2.2:8080 -> 10.244.1.2:48338",
        "across the underlay to node-2 (172.18.0.3) by eth0",
        "the client's own address: not masqueraded",
        "result: reached default/web-b",
    ] {
        assert!(text.contains(part), "no {part:?} in\n{text}");
    }
    // The stable text has no source port and no DNS pod.
    let stable = t.stable_text();
    assert!(
        !stable.contains("48338") && !stable.contains("10.244.2.3:53"),
        "{stable}"
    );
    assert!(
        stable.contains("original 10.244.1.2:* -> 10.96.0.2:80"),
        "{stable}"
    );
}

#[test]
fn a_reject_is_placed_in_the_node_with_the_services_state() {
    let reject = "trace id 1 ip filter FORWARD packet: iif \"cbr0\" oif \"eth0\" ip saddr 10.244.1.2 ip daddr 10.96.0.3 ip id 7 tcp sport 30000 tcp dport 80 tcp flags == syn\n\
                  trace id 1 ip filter FORWARD rule ct state new counter packets 0 bytes 0 jump KUBE-SERVICES (verdict jump KUBE-SERVICES)\n\
                  trace id 1 ip filter KUBE-SERVICES rule meta l4proto tcp ip daddr 10.96.0.3 tcp dport 80 counter packets 0 bytes 0 reject (verdict drop)\n";
    let ev = Evidence {
        destination: Some(SocketAddr::from(([10, 96, 0, 3], 80))),
        pod_route: "10.96.0.3 via 10.244.1.1 dev eth0 src 10.244.1.2".into(),
        sport: 30000,
        outcome: Some(Outcome::Refused),
        printed: vec![
            ("node-1".into(), reject.into()),
            ("node-2".into(), String::new()),
        ],
        ..Default::default()
    };
    let t = explain(&world(), &source(), &request("10.96.0.3:80"), &ev);
    assert!(!t.ok);
    assert_eq!(t.error.as_deref(), Some("refused"));
    let failed = t.hops.last().unwrap();
    assert_eq!(
        (failed.at.as_str(), failed.what.as_str()),
        ("node node-1", "failed")
    );
    assert_eq!(
        failed.lines,
        [
            "rejected by filter KUBE-SERVICES: meta l4proto tcp ip daddr 10.96.0.3 tcp dport 80 reject",
            "sent there by filter FORWARD: ct state new jump KUBE-SERVICES",
            "Service default/none has no endpoints: its selector \"app=nothing\" matches no pod with an address",
        ]
    );
    assert!(
        !t.text().contains("leaves by"),
        "a rejected packet leaves no node"
    );
}

#[test]
fn a_lost_packet_is_last_seen_where_it_left_and_links_down_are_named() {
    let lost = "trace id 1 ip filter FORWARD packet: iif \"cbr0\" oif \"eth0\" ip saddr 10.244.1.2 ip daddr 10.244.2.2 ip id 7 tcp sport 30000 tcp dport 8080 tcp flags == syn\n\
                trace id 1 ip filter FORWARD policy accept\n";
    let ev = Evidence {
        destination: Some(SocketAddr::from(([10, 244, 2, 2], 8080))),
        pod_route: "10.244.2.2 via 10.244.1.1 dev eth0".into(),
        sport: 30000,
        outcome: Some(Outcome::Timeout),
        printed: vec![
            ("node-1".into(), lost.into()),
            ("node-2".into(), String::new()),
        ],
        links: vec![
            ("node-2's underlay port".into(), false),
            ("node-1's cbr0".into(), true),
        ],
        ..Default::default()
    };
    let t = explain(&world(), &source(), &request("10.244.2.2:8080"), &ev);
    assert_eq!(t.error.as_deref(), Some("timeout"));
    assert_eq!(
        t.hops.last().unwrap().lines,
        [
            "no answer; the first packet was last seen in node node-1, leaving by eth0",
            "node node-2 (where 10.244.2.2 lives) never saw it",
            "node-2's underlay port is down",
        ]
    );
}

#[test]
fn a_pod_that_is_not_there_is_named_in_the_error() {
    let e = super::gather::source(&world(), "nosuch").unwrap_err();
    assert_eq!(
        e,
        "there is no pod \"nosuch\" (`testbed get pods` lists them)"
    );
    // A pod the API has whose namespace was never made here is not running.
    let e = super::gather::source(&world(), "default/client").unwrap_err();
    assert_eq!(e, "pod default/client is not running");
}
