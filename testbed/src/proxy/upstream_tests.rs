//! kube-proxy's own tests, transcribed into `tests/kube-proxy/` (Apache-2.0, with the
//! upstream file there): `iptables-goldens.yaml` (whole restore inputs) and
//! `packet-flows.yaml` (packets traced through the rules). Each test's Services and
//! EndpointSlices go through our change tracker and renderer as upstream's go
//! through its proxier; its goldens are compared after both sides are normalised
//! (`upstream_goldens`), its packets followed by our tracer and answered as
//! upstream's `runPacketFlowTests` answers them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::fixed::{ensure_text, JUMPS};
use super::render::{Config, Protocol, ServicePort};
use super::sync::Proxier;
use super::tracer::{trace_at, Packet, Tables, Verdict};
use super::tracker::service_ports;
use super::upstream_goldens::{assert_golden, chain_rules};

const GOLDENS: &str = include_str!("../../tests/kube-proxy/iptables-goldens.yaml");
const FLOWS: &str = include_str!("../../tests/kube-proxy/packet-flows.yaml");

pub(super) fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is missing in {v}"))
}

/// The file's node: its name, addresses, and upstream's NewFakeProxier settings.
struct Node {
    name: String,
    ips: Vec<Ipv4Addr>,
    cfg: Config,
}

impl Node {
    fn of(doc: &Value) -> Node {
        let ips: Vec<Ipv4Addr> = doc["nodeIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
        let cfg = Config {
            cluster_cidr: Some(text(doc, "clusterCIDR").parse().unwrap()),
            node_ip: ips.first().copied(),
            // NewFakeProxier's counters exist.
            nfacct: true,
            ..Default::default()
        };
        Node {
            name: text(doc, "node").into(),
            ips,
            cfg,
        }
    }

    /// The settings with a case's `config` over them.
    fn cfg(&self, case: &Value) -> Config {
        let mut cfg = self.cfg.clone();
        let Some(c) = case.get("config") else {
            return cfg;
        };
        if let Some(v) = c.get("clusterCIDR") {
            cfg.cluster_cidr = v.as_str().map(|s| s.parse().unwrap());
        }
        for (k, field) in [
            ("masqueradeAll", &mut cfg.masquerade_all),
            ("localhostNodePorts", &mut cfg.localhost_node_ports),
            ("nfacct", &mut cfg.nfacct),
        ] {
            if let Some(b) = c[k].as_bool() {
                *field = b;
            }
        }
        cfg
    }
}

/// An EndpointSlice as upstream's makeTestEndpointSlice builds it: `NAME-1`, the
/// service-name label, its ports (upstream's p80 80/TCP unless given).
fn slice(v: &Value) -> (String, EndpointSlice) {
    let svc = text(v, "service");
    let (ns, name) = svc.split_once('/').unwrap();
    let endpoints: Vec<Endpoint> = serde_json::from_value(v["endpoints"].clone()).unwrap();
    let ports: Vec<EndpointPort> = match v.get("ports") {
        Some(p) => serde_json::from_value(p.clone()).unwrap(),
        None => vec![EndpointPort {
            name: Some("p80".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-1")),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                crate::api::labels::SERVICE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports),
    };
    (svc.to_string(), slice)
}

/// The service ports our change tracker makes of these objects on `node`.
pub(super) fn ports(node: &str, services: &[Value], slices: &[Value]) -> Vec<ServicePort> {
    let slices: Vec<(String, EndpointSlice)> = slices.iter().map(slice).collect();
    let mut ports = Vec::new();
    for s in services {
        let svc: Service = serde_json::from_value(s.clone()).unwrap();
        let key = format!(
            "{}/{}",
            svc.metadata.namespace.as_deref().unwrap(),
            svc.metadata.name.as_deref().unwrap()
        );
        let of: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| s)
            .collect();
        ports.extend(service_ports(&svc, &of, node));
    }
    ports
}

/// The restore input our proxier writes for these objects on `node`.
fn render(node: &str, cfg: &Config, services: &[Value], slices: &[Value]) -> String {
    let ports = ports(node, services, slices);
    Proxier::new(cfg.clone()).prepare(&ports).text
}

/// Where a packet goes, as upstream's `tracePacket` answers: the endpoints it may
/// reach ("ip:port, ..." sorted), REJECT, DROP, ACCEPT, or "" when no rule touched
/// it; and whether it was masqueraded.
fn trace(tables: &Tables, local: &[Ipv4Addr], f: &Value) -> (String, bool) {
    let protocol = match f["protocol"].as_str().unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        p => panic!("protocol {p}"),
    };
    let pkt = Packet {
        src: text(f, "source").parse().unwrap(),
        dst: text(f, "dest").parse().unwrap(),
        protocol,
        port: f["port"].as_u64().unwrap() as u16,
    };
    let out = trace_at(tables, local, pkt).unwrap();
    let mut to: Vec<String> = out
        .iter()
        .map(|o| match o.verdict {
            _ if o.accepted => "ACCEPT".into(),
            Verdict::Forward(a) if *a.ip() == pkt.dst && a.port() == pkt.port => String::new(),
            Verdict::Forward(a) => a.to_string(),
            Verdict::Rejected => "REJECT".into(),
            Verdict::Dropped => "DROP".into(),
        })
        .collect();
    to.sort();
    to.dedup();
    (to.join(", "), out.iter().any(|o| o.masquerade))
}

/// Runs flows through the rules (with the jumps from the built-in chains); returns
/// how many ran.
fn run_flows(
    at: &str,
    rules: &str,
    local: &[Ipv4Addr],
    flows: &[Value],
    overrides: &Value,
) -> usize {
    let tables = Tables::parse(&format!("{rules}{}", ensure_text(&JUMPS))).unwrap();
    for f in flows {
        let name = text(f, "name");
        let over = &overrides[name];
        let want = over["output"].as_str().unwrap_or_else(|| text(f, "output"));
        let masq = over["masq"]
            .as_bool()
            .unwrap_or(f["masq"].as_bool().unwrap_or(false));
        let name = over["name"].as_str().unwrap_or(name);
        let (to, masqueraded) = trace(&tables, local, f);
        assert_eq!(to, want, "{at}: flow {name:?}");
        assert_eq!(masqueraded, masq, "{at}: flow {name:?}: masquerade");
    }
    if let Some(o) = overrides.as_object() {
        for k in o.keys() {
            assert!(
                flows.iter().any(|f| f["name"] == k.as_str()),
                "{at}: override {k:?} matches no flow"
            );
        }
    }
    flows.len()
}

pub(super) fn list<'a>(case: &'a Value, test: &'a Value, k: &str) -> &'a [Value] {
    case.get(k)
        .or_else(|| test.get(k))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every case of every test in an upstream test file, with its name (`Test / case`);
/// a test without `cases` is its own one case (Null).
pub(super) fn cases(doc: &Value) -> Vec<(String, &Value, &Value)> {
    static LONE: [Value; 1] = [Value::Null];
    let mut out = Vec::new();
    for test in doc["tests"].as_array().unwrap() {
        for case in test["cases"].as_array().map_or(&LONE[..], Vec::as_slice) {
            let at = match case.get("name") {
                Some(n) => format!("{} / {}", text(test, "test"), n.as_str().unwrap()),
                None => text(test, "test").to_string(),
            };
            out.push((at, test, case));
        }
    }
    out
}

/// Runs one file's tests; returns how many flows and assertions ran.
fn run(file: &str) -> usize {
    let (doc, _) = crate::yaml::load(file).expect("valid YAML");
    let node = Node::of(&doc);
    let mut ran = 0;
    for (at, test, case) in cases(&doc) {
        let cfg = node.cfg(case);
        let services = list(case, test, "services");
        let slices = list(case, test, "slices");
        let rules = render(&node.name, &cfg, services, slices);
        if let Some(expected) = test["expected"].as_str() {
            assert_golden(&at, expected, &rules);
            ran += 1;
        }
        for c in list(case, test, "chains") {
            let want: Vec<&str> = text(c, "rules").lines().collect();
            let got = chain_rules(&rules, text(c, "table"), text(c, "chain"));
            assert_eq!(got, want, "{at}: chain {}", text(c, "chain"));
            ran += 1;
        }
        let over = &case["overrides"];
        ran += run_flows(&at, &rules, &node.ips, list(case, test, "flows"), over);
        let after = [
            (
                "afterSliceDeletion",
                render(&node.name, &cfg, services, &[]),
            ),
            ("afterServiceDeletion", render(&node.name, &cfg, &[], &[])),
        ];
        for (k, rules) in after {
            let at = format!("{at} ({k})");
            ran += run_flows(&at, &rules, &node.ips, list(case, test, k), &Value::Null);
        }
    }
    ran
}

#[test]
fn upstreams_iptables_goldens_pass() {
    // TestOverallIPTablesRules' golden and TestTracePacket's 7 flows; TestBadIPs.
    assert_eq!(run(GOLDENS), 9);
}

#[test]
fn upstreams_packet_flow_tests_pass() {
    // Flows and chain checks, once per case of their test: TestNoEndpointsReject 6,
    // TestClusterIPGeneral 9, TestLoadBalancer 13, TestNodePorts 2 x 6,
    // TestHealthCheckNodePort 2, TestDropInvalidRule 2, TestMasqueradeRule 1,
    // TestExternalTrafficPolicyLocal 7 and Cluster 7, TestInternalTrafficPolicy 4 x 2,
    // TestTerminatingEndpointsTrafficPolicyLocal 4 x 4 and Cluster 4 x 4,
    // TestInternalExternalMasquerade 4 x 30, TestLoadBalancerIngressRouteTypeProxy 3.
    assert_eq!(run(FLOWS), 222);
}
