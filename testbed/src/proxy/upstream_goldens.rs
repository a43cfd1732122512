//! kube-proxy's own iptables goldens, transcribed into
//! `tests/kube-proxy/iptables-goldens.yaml` (Apache-2.0, with the upstream file
//! there): the same Services and EndpointSlices through our change tracker and
//! renderer, the restore input compared with upstream's after both are normalised
//! as upstream's `assertIPTablesRulesEqual` does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::render::Config;
use super::sync::Proxier;
use super::tracker::service_ports;

const GOLDENS: &str = include_str!("../../tests/kube-proxy/iptables-goldens.yaml");

/// One table of restore input: its chains in declaration order, rules by chain.
type Table = (Vec<String>, BTreeMap<String, Vec<String>>);

#[derive(Default)]
struct Dump {
    tables: BTreeMap<String, Table>,
}

fn parse(text: &str) -> Dump {
    let mut d = Dump::default();
    let mut table = String::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
            d.tables.entry(table.clone()).or_default();
        } else if l == "COMMIT" {
            continue;
        } else if let Some(c) = l.strip_prefix(':') {
            let name = c.split(' ').next().unwrap().to_string();
            let t = d.tables.get_mut(&table).unwrap();
            if !t.0.contains(&name) {
                t.0.push(name);
            }
        } else {
            let chain = l.split(' ').nth(1).unwrap().to_string();
            let t = d.tables.get_mut(&table).unwrap();
            t.1.entry(chain).or_default().push(l.to_string());
        }
    }
    d
}

/// The service name of a rule's comment (up to a space or a colon), as upstream's
/// `orderByCommentServiceName`.
fn comment_service(rule: &str) -> String {
    let Some(i) = rule.find("--comment ") else {
        return String::new();
    };
    let c = rule[i + 10..].trim_start_matches('"');
    c.split([' ', ':', '"'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Upstream's `sortIPTablesRules`: tables by name; KUBE-NODEPORTS, KUBE-SERVICES,
/// the other KUBE- chains by name, then the rest; the rules of KUBE-NODEPORTS and
/// KUBE-SERVICES (stably) by service name, the "must be the last rule" rule last.
fn normalise(text: &str) -> String {
    let d = parse(text);
    let mut out = String::new();
    for (name, (mut chains, mut rules)) in d.tables {
        let rank = |c: &str| match c {
            "KUBE-NODEPORTS" => 0,
            "KUBE-SERVICES" => 1,
            c if c.starts_with("KUBE-") => 2,
            _ => 3,
        };
        chains.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        for c in ["KUBE-NODEPORTS", "KUBE-SERVICES"] {
            if let Some(r) = rules.get_mut(c) {
                r.sort_by_key(|l| (l.contains("must be the last rule"), comment_service(l)));
            }
        }
        out.push_str(&format!("*{name}\n"));
        for c in &chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for c in &chains {
            for r in rules.get(c).into_iter().flatten() {
                out.push_str(r);
                out.push('\n');
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Our differences from upstream on purpose, taken out of our output (see the file).
fn without_intended_differences(ours: &str) -> String {
    let mut out = String::new();
    let mut skip_table = false;
    for l in ours.lines() {
        if l == "*mangle" {
            skip_table = true;
        }
        if !skip_table && l != ":KUBE-PROXY-CANARY - [0:0]" {
            out.push_str(&l.replace(" -j MASQUERADE --random-fully", " -j MASQUERADE"));
            out.push('\n');
        }
        if l == "COMMIT" {
            skip_table = false;
        }
    }
    out
}

fn slice(v: &Value) -> (String, EndpointSlice) {
    let svc = v["service"].as_str().unwrap();
    let (ns, name) = svc.split_once('/').unwrap();
    let endpoints: Vec<Endpoint> = serde_json::from_value(v["endpoints"].clone()).unwrap();
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
        // Upstream's makeTestEndpointSlice: port p80, 80/TCP.
        ports: Some(vec![EndpointPort {
            name: Some("p80".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    (svc.to_string(), slice)
}

#[test]
fn upstreams_iptables_goldens_pass() {
    let (doc, _) = crate::yaml::load(GOLDENS).expect("valid YAML");
    let node = doc["node"].as_str().unwrap();
    let cfg = Config {
        cluster_cidr: Some(doc["clusterCIDR"].as_str().unwrap().parse().unwrap()),
        node_ip: Some(doc["nodeIP"].as_str().unwrap().parse().unwrap()),
        nfacct: true,
    };
    let tests = doc["tests"].as_array().unwrap();
    for t in tests {
        let slices: Vec<(String, EndpointSlice)> =
            t["slices"].as_array().unwrap().iter().map(slice).collect();
        let mut ports = Vec::new();
        for s in t["services"].as_array().unwrap() {
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
        let ours = Proxier::new(cfg.clone()).prepare(&ports).text;
        flows(t, &ours, cfg.node_ip.unwrap());
        let ours = normalise(&without_intended_differences(&ours));
        let theirs = normalise(t["expected"].as_str().unwrap());
        pretty_eq(theirs, ours, t["test"].as_str().unwrap());
    }
    assert!(!tests.is_empty());
}

/// Upstream's packet-flow cases of a test, through our rules (with the jumps from
/// the built-in chains) and our tracer, answered as their `tracePacket` does.
fn flows(t: &Value, ours: &str, node_ip: std::net::Ipv4Addr) {
    use super::fixed::{ensure_text, JUMPS};
    use super::render::Protocol;
    use super::tracer::{trace_at, Packet, Tables, Verdict};
    let tables = Tables::parse(&format!("{ours}{}", ensure_text(&JUMPS))).unwrap();
    for f in t["flows"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap();
        let pkt = Packet {
            src: f["source"].as_str().unwrap().parse().unwrap(),
            dst: f["dest"].as_str().unwrap().parse().unwrap(),
            protocol: Protocol::Tcp,
            port: f["port"].as_u64().unwrap() as u16,
        };
        let out = trace_at(&tables, &[node_ip], pkt).unwrap();
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
        assert_eq!(
            to.join(", "),
            f["output"].as_str().unwrap(),
            "flow {name:?}"
        );
        let masq = out.iter().any(|o| o.masquerade);
        assert_eq!(
            masq,
            f["masq"].as_bool().unwrap_or(false),
            "flow {name:?}: masquerade"
        );
    }
}

/// Equal, or a panic that shows the lines each side lacks.
fn pretty_eq(theirs: String, ours: String, what: &str) {
    if theirs == ours {
        return;
    }
    let t: Vec<&str> = theirs.lines().collect();
    let o: Vec<&str> = ours.lines().collect();
    let only_theirs: Vec<&&str> = t.iter().filter(|l| !o.contains(l)).collect();
    let only_ours: Vec<&&str> = o.iter().filter(|l| !t.contains(l)).collect();
    panic!(
        "{what}: our rules differ from upstream's\nonly upstream's:\n{}\nonly ours:\n{}\nours in full:\n{ours}",
        only_theirs.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
        only_ours.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
    );
}
