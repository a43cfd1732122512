//! Upstream's nftables goldens (`tests/kube-proxy/nftables-goldens.yaml`) against our
//! renderer, the full and partial syncs against the model of nftables, and the tracer.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::state::Table;
use super::sync::Proxier;
use crate::proxy::render::{Config, ServicePort};
use crate::proxy::upstream_tests::{list, ports, text};

const GOLDENS: &str = include_str!("../../../tests/kube-proxy/nftables-goldens.yaml");

/// Upstream's `sortNFTablesTransaction`: blank lines and comments dropped, lines
/// sorted by object type (table, chain, rule, set, map, element), then by object
/// name, rules kept in their order within a chain, other lines by their text.
pub fn sort_transaction(tx: &str) -> String {
    let order = |t: &str| match t {
        "table" => 10,
        "chain" => 9,
        "rule" => 8,
        "set" => 7,
        "map" => 6,
        "element" => 5,
        _ => 0,
    };
    let mut lines: Vec<&str> = tx
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    lines.sort_by(|a, b| {
        let (wa, wb): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
        if wa.len() < 5 || wb.len() < 5 {
            return std::cmp::Ordering::Equal;
        }
        order(wb[1])
            .cmp(&order(wa[1]))
            .then_with(|| wa[4].cmp(wb[4]))
            .then_with(|| {
                if wa[1] == "rule" {
                    std::cmp::Ordering::Equal
                } else {
                    a.cmp(b)
                }
            })
    });
    lines.join("\n")
}

/// The file's node and upstream's NewFakeProxier settings.
fn config(doc: &Value) -> (String, Vec<Ipv4Addr>, Config) {
    let ips = |k: &str| -> Vec<Ipv4Addr> {
        doc[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    };
    let node_ips = ips("nodeIPs");
    let cfg = Config {
        cluster_cidr: Some(text(doc, "clusterCIDR").parse().unwrap()),
        node_ip: node_ips.first().copied(),
        service_cidr: Some(text(doc, "serviceCIDR").parse().unwrap()),
        node_port_addresses: ips("nodePortAddresses"),
        ..Default::default()
    };
    (text(doc, "node").to_string(), node_ips, cfg)
}

/// The table a full sync of `ports` leaves.
fn full_table(cfg: &Config, ports: &[ServicePort]) -> Table {
    let update = Proxier::new(cfg.clone()).full(ports);
    let mut t = Table::default();
    t.apply(&update.text)
        .unwrap_or_else(|e| panic!("{e}\n{}", update.text));
    t
}

#[test]
fn upstreams_nftables_goldens_pass() {
    let (doc, _) = crate::yaml::load(GOLDENS).expect("valid YAML");
    let (node, _, cfg) = config(&doc);
    let mut ran = 0;
    for test in doc["tests"].as_array().unwrap() {
        let at = text(test, "test");
        let ports = ports(
            &node,
            list(test, test, "services"),
            list(test, test, "slices"),
        );
        let table = full_table(&cfg, &ports);
        let want = sort_transaction(text(test, "expected"));
        let got = sort_transaction(&table.dump());
        if want != got {
            let diff: Vec<String> = diff_lines(&want, &got);
            panic!("{at}: the tables differ:\n{}", diff.join("\n"));
        }
        ran += 1;
    }
    assert_eq!(ran, 1);
}

/// Lines only in `want` (-) and only in `got` (+).
fn diff_lines(want: &str, got: &str) -> Vec<String> {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut out: Vec<String> = w
        .iter()
        .filter(|l| !g.contains(l))
        .map(|l| format!("- {l}"))
        .collect();
    out.extend(
        g.iter()
            .filter(|l| !w.contains(l))
            .map(|l| format!("+ {l}")),
    );
    out
}

#[test]
fn the_sort_is_upstreams() {
    // From upstream's Test_sortNFTablesTransaction: rules keep their order in a
    // chain, everything else is sorted.
    let input = "add rule ip t c2 b\nadd chain ip t c2\nadd rule ip t c1 z\nadd rule ip t c2 a\n# x\n\nadd element ip t s { 2 }\nadd element ip t s { 1 }\nadd table ip t { comment \"x\" ; }";
    assert_eq!(
        sort_transaction(input),
        "add table ip t { comment \"x\" ; }\nadd chain ip t c2\nadd rule ip t c1 z\nadd rule ip t c2 b\nadd rule ip t c2 a\nadd element ip t s { 1 }\nadd element ip t s { 2 }"
    );
}
