//! kube-proxy's own packet-flow tests, transcribed into
//! `tests/kube-proxy/packet-flows.yaml` (Apache-2.0, with the upstream file and
//! commit there), run through our change tracker, renderer and tracer: a Service and
//! its EndpointSlice in, the rules of one node, and each packet followed through them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort as SvcPort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::fixed::{ensure_text, JUMPS};
use super::render::{Config, Protocol};
use super::sync::Proxier;
use super::tracer::{self, Packet, Tables, Verdict};
use super::tracker::service_ports;

const FLOWS: &str = include_str!("../../tests/kube-proxy/packet-flows.yaml");

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is missing in {v}"))
}

fn service(s: &Value, policy: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(text(s, "name").into()),
            namespace: Some(text(s, "namespace").into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(text(s, "clusterIP").into()),
            internal_traffic_policy: Some(policy.into()),
            ports: Some(vec![SvcPort {
                port: s["port"].as_i64().unwrap() as i32,
                protocol: Some(text(s, "protocol").into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(s: &Value, endpoints: &[Value]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{}-1", text(s, "name"))),
            namespace: Some(text(s, "namespace").into()),
            labels: Some(BTreeMap::from([(
                crate::api::labels::SERVICE_NAME_LABEL.to_string(),
                text(s, "name").to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|e| Endpoint {
                addresses: vec![text(e, "ip").into()],
                conditions: Some(EndpointConditions {
                    ready: Some(e["ready"].as_bool().unwrap_or(true)),
                    serving: e["serving"].as_bool(),
                    terminating: e["terminating"].as_bool(),
                }),
                node_name: Some(text(e, "node").into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some(String::new()),
            port: Some(s["port"].as_i64().unwrap() as i32),
            protocol: Some(text(s, "protocol").into()),
            ..Default::default()
        }]),
    }
}

/// Where a packet from `source` to the Service goes, as upstream's flow tests write
/// it, and whether it is masqueraded.
fn flow(tables: &Tables, s: &Value, source: &str) -> (String, bool) {
    let out = tracer::trace(
        tables,
        Packet {
            src: source.parse().unwrap(),
            dst: text(s, "clusterIP").parse().unwrap(),
            protocol: Protocol::Tcp,
            port: s["port"].as_u64().unwrap() as u16,
        },
    )
    .unwrap();
    let masq = out.iter().any(|o| o.masquerade);
    let mut to: Vec<String> = out
        .iter()
        .map(|o| match o.verdict {
            Verdict::Forward(a) => a.to_string(),
            Verdict::Rejected => "REJECT".into(),
            Verdict::Dropped => "DROP".into(),
        })
        .collect();
    to.sort();
    to.dedup();
    (to.join(", "), masq)
}

#[test]
fn upstreams_packet_flow_cases_pass() {
    let (doc, _) = crate::yaml::load(FLOWS).expect("valid YAML");
    let node = text(&doc, "node");
    let cfg = Config {
        cluster_cidr: Some(text(&doc, "clusterCIDR").parse().unwrap()),
        ..Default::default()
    };
    let mut ran = 0;
    for suite in doc["suites"].as_array().unwrap() {
        for case in suite["cases"].as_array().unwrap() {
            let at = format!("{} / {}", text(suite, "test"), text(case, "name"));
            let s = case.get("service").unwrap_or(&suite["service"]);
            let policy = case["internalTrafficPolicy"].as_str().unwrap_or("Cluster");
            let svc = service(s, policy);
            let endpoints = case["endpoints"].as_array().unwrap();
            let tables = |endpoints: &[Value]| {
                let sl = slice(s, endpoints);
                let ports = service_ports(&svc, &[&sl], node);
                Tables::parse(
                    &(Proxier::new(cfg.clone()).prepare(&ports).text + &ensure_text(&JUMPS)),
                )
                .unwrap()
            };
            let now = tables(endpoints);
            for f in case["flows"].as_array().unwrap() {
                let (to, masq) = flow(&now, s, text(f, "source"));
                assert_eq!(to, text(f, "output"), "{at}: {}", text(f, "name"));
                if let Some(want) = f["masq"].as_bool() {
                    assert_eq!(masq, want, "{at}: {}: masquerade", text(f, "name"));
                }
                ran += 1;
            }
            // Upstream then deletes the slice, in the suites that say so.
            if let Some(want) = suite["afterDeletion"].as_str() {
                let (to, _) = flow(&tables(&[]), s, "10.0.0.2");
                assert_eq!(to, want, "{at}: endpoints deleted");
            }
        }
    }
    assert_eq!(
        ran,
        FLOWS.matches("output:").count(),
        "every flow of the file ran"
    );
}
