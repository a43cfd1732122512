//! Upstream's nftables goldens (`tests/kube-proxy/nftables-goldens.yaml`) against our
//! renderer, the full and partial syncs against the model of nftables, and the tracer.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::state::Table;
use super::sync::Proxier;
use crate::proxy::render::{Config, ServicePort};
use crate::proxy::tracker::PortKey;
use crate::proxy::upstream_tests::{cases, list, ports, text};

const GOLDENS: &str = include_str!("../../../tests/kube-proxy/nftables-goldens.yaml");
const FLOWS: &str = include_str!("../../../tests/kube-proxy/nftables-flows.yaml");

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
pub(super) fn config(doc: &Value) -> (String, Vec<Ipv4Addr>, Config) {
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
pub(super) fn full_table(cfg: &Config, ports: &[ServicePort]) -> Table {
    let update = Proxier::new(cfg.clone()).full_in_one(ports);
    let mut t = Table::default();
    t.apply(update.one())
        .unwrap_or_else(|e| panic!("{e}\n{}", update.one()));
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
pub(super) fn diff_lines(want: &str, got: &str) -> Vec<String> {
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

/// A case's settings over the file's: upstream's proxier fields it changes.
fn case_config(base: &Config, case: &Value) -> Config {
    let mut cfg = base.clone();
    let c = &case["config"];
    if let Some(a) = c["nodePortAddresses"].as_array() {
        cfg.node_port_addresses = a
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect();
    }
    if let Some(v) = c.get("clusterCIDR") {
        cfg.cluster_cidr = v.as_str().map(|s| s.parse().unwrap());
    }
    if let Some(b) = c["masqueradeAll"].as_bool() {
        cfg.masquerade_all = b;
    }
    cfg
}

/// Follows `flows` through `table`, with a case's `overrides` of their output,
/// masq or name; returns how many.
fn check_flows(
    at: &str,
    table: &Table,
    node_ips: &[Ipv4Addr],
    flows: &[Value],
    over: &Value,
) -> usize {
    for f in flows {
        let name = text(f, "name");
        let o = &over[name];
        let want = o["output"].as_str().unwrap_or_else(|| text(f, "output"));
        let masq = o["masq"]
            .as_bool()
            .unwrap_or(f["masq"].as_bool().unwrap_or(false));
        let proto = f["protocol"].as_str().unwrap_or("TCP").to_lowercase();
        let src = text(f, "source").parse().unwrap();
        let dst = text(f, "dest").parse().unwrap();
        let port = f["port"].as_u64().unwrap() as u16;
        let got = super::tracer::trace(table, node_ips, src, &proto, dst, port)
            .unwrap_or_else(|e| panic!("{at}: {name}: {e}"));
        let by = got.matches.join("\n");
        assert_eq!(got.output(), want, "{at}: {name:?}, matched:\n{by}");
        assert_eq!(got.masq, masq, "{at}: {name:?}: masquerade, matched:\n{by}");
    }
    for k in over.as_object().into_iter().flat_map(|o| o.keys()) {
        assert!(
            flows.iter().any(|f| f["name"] == k.as_str()),
            "{at}: override {k:?} matches no flow"
        );
    }
    flows.len()
}

/// Runs upstream's packet-flow tests of `file` through our full sync and tracer;
/// returns how many packets were followed.
fn run_flows(file: &str) -> usize {
    let (doc, _) = crate::yaml::load(file).expect("valid YAML");
    let (node, node_ips, base) = config(&doc);
    let mut ran = 0;
    for (at, test, case) in cases(&doc) {
        let cfg = case_config(&base, case);
        let services = list(case, test, "services");
        let slices = list(case, test, "slices");
        let tables = [
            ("flows", &case["overrides"], ports(&node, services, slices)),
            (
                "afterSliceDeletion",
                &Value::Null,
                ports(&node, services, &[]),
            ),
            ("afterServiceDeletion", &Value::Null, Vec::new()),
        ];
        for (k, over, ports) in tables {
            let table = full_table(&cfg, &ports);
            let at = format!("{at} ({k})");
            ran += check_flows(&at, &table, &node_ips, list(case, test, k), over);
        }
    }
    ran
}

#[test]
fn upstreams_nftables_packet_flow_tests_pass() {
    // TestNoEndpointsReject 6, TestClusterIPGeneral 10, TestLoadBalancer 13,
    // TestNodePorts 2 x 4, TestExternalTrafficPolicyLocal 7 and Cluster 7,
    // TestInternalTrafficPolicy 4 x 2, TestTerminatingEndpointsTrafficPolicyLocal
    // and Cluster 4 x 4 each, TestInternalExternalMasquerade 4 x 27.
    assert_eq!(run_flows(FLOWS), 51 + 8 + 32 + 108);
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

/// A random service port `i` (its own cluster IP), with any of the features that
/// change the table: node port, external IP, load balancer with source ranges,
/// affinity, Local policies, endpoints here and elsewhere or none.
fn random_port(rng: &mut crate::proxy::node_tests::Rng, i: u8) -> ServicePort {
    use crate::proxy::render::Protocol;
    let eps: Vec<std::net::SocketAddrV4> = (0..rng.below(4))
        .map(|k| {
            format!("10.180.{}.{}:80", rng.below(2), 1 + k)
                .parse()
                .unwrap()
        })
        .collect();
    let proto = [Protocol::Tcp, Protocol::Udp][rng.below(2) as usize];
    let mut sp = ServicePort::cluster_ip(
        ("ns", &format!("svc{i}"), "p"),
        proto,
        Ipv4Addr::new(172, 30, 0, i),
        80,
        eps.clone(),
    );
    sp.local_endpoints = eps
        .into_iter()
        .filter(|e| e.ip().octets()[2] == 0)
        .collect();
    if rng.below(2) == 0 {
        sp.node_port = 30000 + i as u16;
    }
    if rng.below(3) == 0 {
        sp.external_ips = vec![Ipv4Addr::new(192, 168, 99, i)];
    }
    if rng.below(3) == 0 {
        sp.load_balancer_ips = vec![Ipv4Addr::new(5, 6, 7, i)];
        if rng.below(2) == 0 {
            sp.source_ranges = vec!["203.0.113.0/25".parse().unwrap()];
        }
    }
    if rng.below(3) == 0 {
        sp.affinity_seconds = Some(10800);
    }
    sp.internal_local = rng.below(4) == 0;
    sp.external_local = rng.below(3) == 0;
    sp
}

/// One random batch of changes to the service ports in `now` (at most `changes`,
/// indexes 1 to `indexes`): the ports upserted, the keys removed, and all ports after.
fn random_batch(
    rng: &mut crate::proxy::node_tests::Rng,
    now: &mut std::collections::BTreeMap<u8, ServicePort>,
    changes: u64,
    indexes: u64,
) -> (Vec<ServicePort>, Vec<PortKey>, Vec<ServicePort>) {
    use crate::proxy::tracker::port_key;
    let (mut upserts, mut removed) = (Vec::new(), Vec::new());
    for _ in 0..1 + rng.below(changes) {
        let i = 1 + rng.below(indexes) as u8;
        if rng.below(4) == 0 {
            if let Some(sp) = now.remove(&i) {
                removed.push(port_key(&sp));
            }
        } else {
            let sp = random_port(rng, i);
            // Another protocol is another service port: the old one goes.
            if let Some(old) = now.insert(i, sp.clone()) {
                if port_key(&old) != port_key(&sp) {
                    removed.push(port_key(&old));
                }
            }
            upserts.push(sp);
        }
    }
    let all: Vec<ServicePort> = now.values().cloned().collect();
    upserts.retain(|u| all.contains(u));
    (upserts, removed, all)
}

fn test_cfg() -> Config {
    Config {
        cluster_cidr: Some("10.0.0.0/8".parse().unwrap()),
        node_ip: Some("192.168.0.2".parse().unwrap()),
        service_cidr: Some("172.30.0.0/16".parse().unwrap()),
        node_port_addresses: vec!["192.168.0.2".parse().unwrap()],
        ..Default::default()
    }
}

#[test]
fn a_cold_full_sync_in_chunks_ends_as_one_transaction_would() {
    let mut rng = crate::proxy::node_tests::Rng(0x5851_F42D_4C95_7F2D);
    let all: Vec<ServicePort> = (1..=10).map(|i| random_port(&mut rng, i)).collect();
    let mut proxier = Proxier::new(test_cfg()).with_chunk(3);
    let cold = proxier.full_sync(&all);
    assert_eq!(
        cold.transactions.len(),
        5,
        "the base, then 10 service ports by 3"
    );
    let mut table = Table::default();
    for t in &cold.transactions {
        table.apply(t).unwrap_or_else(|e| panic!("{e}\n{t}"));
    }
    let want = full_table(&test_cfg(), &all);
    assert_eq!(
        sort_transaction(&table.dump()),
        sort_transaction(&want.dump())
    );
    let base = Proxier::new(test_cfg()).full_in_one(&[]);
    assert_eq!(cold.transactions[0], base.one(), "the base alone first");
    proxier.commit(cold);
    // The table is there: a full sync after a failure replaces it at once.
    proxier.failed();
    assert_eq!(proxier.full_sync(&all).transactions.len(), 1);
    proxier.table_gone();
    assert_eq!(proxier.full_sync(&all).transactions.len(), 5);
    // At most one chunk: one transaction.
    assert_eq!(proxier.full_sync(&all[..3]).transactions.len(), 1);
}

#[test]
fn partial_syncs_leave_the_table_as_one_full_sync_would() {
    use std::collections::BTreeMap;
    use std::time::Duration;
    let mut rng = crate::proxy::node_tests::Rng(0x2545_F491_4F6C_DD1D);
    let cfg = test_cfg();
    let (mut partials, mut lines, mut chunked) = (0, 0, 0);
    for _ in 0..200 {
        // Changes of more than 1 to 4 ports go in chunks.
        let mut proxier = Proxier::new(cfg.clone())
            .with_stale_after(Duration::ZERO)
            .with_chunk(1 + rng.below(4) as usize);
        let mut table = Table::default();
        let mut now: BTreeMap<u8, ServicePort> = BTreeMap::new();
        for step in 0..1 + rng.below(10) {
            let (upserts, removed, all) = random_batch(&mut rng, &mut now, 5, 10);
            let update = if step == 0 {
                proxier.full_in_one(&all)
            } else {
                partials += 1;
                proxier.partial(upserts, removed)
            };
            lines += update.transactions.first().map_or(0, |t| t.lines().count());
            chunked += update.transactions.len().saturating_sub(1);
            for t in &update.transactions {
                table
                    .apply(t)
                    .unwrap_or_else(|e| panic!("step {step}: {e}\n{t}"));
            }
            proxier.commit(update);
            // The chains left stale are deleted by the next sync.
            let cleanup = proxier.partial(Vec::new(), Vec::new());
            table
                .apply(cleanup.one())
                .unwrap_or_else(|e| panic!("cleanup: {e}\n{}", cleanup.one()));
            proxier.commit(cleanup);
            let fresh = full_table(&cfg, &all);
            let (got, want) = (
                sort_transaction(&table.dump()),
                sort_transaction(&fresh.dump()),
            );
            let diff = diff_lines(&want, &got);
            assert!(diff.is_empty(), "after step {step}:\n{}", diff.join("\n"));
        }
    }
    assert!(partials > 500, "{partials} partial syncs");
    assert!(chunked > 100, "{chunked} transactions after the first");
    assert!(lines > 0);
}

/// `nft -j list table ip kube-proxy` in namespace `ns`, in an order that does not
/// depend on the order things were added: handles dropped, elements sorted, rules
/// kept in their order within their chain.
fn real_table(ns: &str) -> (Vec<String>, std::collections::BTreeMap<String, Vec<String>>) {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                if let Some(Value::Array(e)) = m.get_mut("elem") {
                    e.sort_by_key(|x| x.to_string());
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "nft",
            "-j",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    strip(&mut v);
    let (mut objects, mut rules) = (Vec::new(), std::collections::BTreeMap::new());
    for o in v["nftables"].as_array().unwrap() {
        if let Some(r) = o.get("rule") {
            let chain = r["chain"].as_str().unwrap().to_string();
            rules
                .entry(chain)
                .or_insert_with(Vec::new)
                .push(r.to_string());
        } else if o.get("metainfo").is_none() {
            objects.push(o.to_string());
        }
    }
    objects.sort();
    (objects, rules)
}

/// Runs `nft -f -` with `text` in namespace `ns`.
fn real_nft(ns: &str, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft refused: {out:?}\n{text}");
}

/// Writes `text` into namespace `ns` through our netlink writer.
fn netlink(ns: &str, text: &str) {
    let tx = crate::kernel::nft::compile(text).unwrap_or_else(|e| panic!("{e}"));
    let path = std::path::PathBuf::from(format!("/run/netns/{ns}"));
    if let Err(e) = crate::kernel::nft::socket::apply(&path, &tx) {
        panic!("{e}\n{text}");
    }
}

/// `nft list table ip kube-proxy` reads the same in namespaces `a` and `b`.
fn same_listing(step: usize, a: &str, b: &str) {
    let listed = |n: &str| {
        let list = [
            "ip",
            "netns",
            "exec",
            n,
            "nft",
            "list",
            "table",
            "ip",
            "kube-proxy",
        ];
        crate::kernel::nft::tests::sh(&list, None)
    };
    let (theirs, ours) = (listed(a), listed(b));
    assert!(
        theirs == ours,
        "after step {step}, nft -f against ours:\n{}",
        diff_lines(&theirs, &ours).join("\n")
    );
}

#[test]
fn real_nft_takes_every_partial_sync_and_ends_as_a_full_sync() {
    use crate::kernel::nft::tests::Scratch;
    use std::time::Duration;
    let Some(scratch) = Scratch::new("nft", &["a", "b", "c"]) else {
        return;
    };
    let ns = &scratch.0;
    let cfg = test_cfg();
    let mut rng = crate::proxy::node_tests::Rng(0x9E37_79B9_7F4A_7C15);
    let mut proxier = Proxier::new(cfg.clone()).with_stale_after(Duration::ZERO);
    let mut now: std::collections::BTreeMap<u8, ServicePort> = Default::default();
    for step in 0..30 {
        let mut batch = random_batch(&mut rng, &mut now, 6, 12);
        // The first sync starts from at least 5 ports, so that it goes in chunks.
        while step == 0 && batch.2.len() < 5 {
            batch = random_batch(&mut rng, &mut now, 6, 12);
        }
        let (upserts, removed, all) = batch;
        let update = if step == 0 {
            // A cold full sync in chunks of 2 service ports.
            let cold = Proxier::new(cfg.clone()).with_chunk(2).full_sync(&all);
            assert_eq!(
                cold.transactions.len(),
                1 + all.len().div_ceil(2),
                "the base, then {} ports by 2",
                all.len()
            );
            cold
        } else {
            proxier.partial(upserts, removed)
        };
        for t in &update.transactions {
            real_nft(&ns[0], t);
            netlink(&ns[2], t);
        }
        proxier.commit(update);
        let cleanup = proxier.partial(Vec::new(), Vec::new());
        real_nft(&ns[0], cleanup.one());
        netlink(&ns[2], cleanup.one());
        proxier.commit(cleanup);
        let full = Proxier::new(cfg.clone()).full_in_one(&all);
        real_nft(&ns[1], full.one());
        assert_eq!(real_table(&ns[0]), real_table(&ns[1]), "after step {step}");
        // Our netlink writer leaves the table nft leaves, as `nft list` reads it.
        same_listing(step, &ns[0], &ns[2]);
    }
}

/// The periodic check rewrites everything only when nft said the table is gone, not
/// when nft itself failed (a node out of processes or memory for a moment).
#[test]
fn only_a_missing_table_makes_the_next_sync_a_full_one() {
    use super::has_table;
    assert_eq!(has_table("kube-proxy-table-present\n"), Some(true));
    assert_eq!(has_table("kube-proxy-table-absent\n"), Some(false));
    assert_eq!(has_table("sh: 1: nft: not found\n"), None);
    assert_eq!(has_table(""), None);
}
