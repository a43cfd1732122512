//! `testbed trace` on real testbeds: the seed's flow with real values, each way a
//! connection fails said where and why, and every node's ruleset the same after a
//! trace as before it. Needs root.

mod common;

use common::running::Running;
use common::{repo, testbed_bin};
use serde_json::Value;

/// Every node's whole ruleset, without counters (which traffic moves).
fn rulesets(tb: &Running) -> Vec<String> {
    ["node-1", "node-2"]
        .iter()
        .map(|n| {
            let out = tb.exec(&format!("node/{n}"), &["nft", "list", "ruleset"]);
            assert!(out.status.success(), "nft list ruleset in {n}: {out:?}");
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(testbed::trace::events::without_counters)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// `testbed trace FROM TO`: exit status and stdout, with the rulesets compared
/// before and after.
fn trace(tb: &Running, args: &[&str]) -> (bool, String) {
    let before = rulesets(tb);
    let out = tb.cli(&[&["trace"], args].concat());
    let after = rulesets(tb);
    assert_eq!(before, after, "a trace changed a node's ruleset");
    assert!(!after.iter().any(|r| r.contains("testbed-trace")));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        out.status.success() || !text.is_empty(),
        "trace {args:?} failed without a trace: {}",
        common::stderr(&out)
    );
    (out.status.success(), text)
}

fn has(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "the trace lacks {p:?}:\n{text}");
    }
}

#[test]
fn a_trace_from_client_to_web_tells_the_seed_flow_with_real_values() {
    if !common::root() {
        return;
    }
    let tb = Running::up_scenario("trace", "trace.yaml");
    tb.wait_ready("web", 1);
    tb.wait_synced();
    let ip = tb.cluster_ip("web");
    let (ok, text) = trace(&tb, &["client", "web"]);
    assert!(ok, "{text}");
    has(
        &text,
        &[
            "asked web.default.svc.cluster.local. NOERROR (1 answers)",
            &format!("answer: web.default.svc.cluster.local. 5 A {ip}"),
            "node-1 DNATed the question to ",
            "cbr0 of node-1",
            "node node-1: netfilter, first packet",
            "nat PREROUTING: -> jump KUBE-SERVICES",
            &format!(
                "nat KUBE-SERVICES: meta l4proto tcp ip daddr {ip} tcp dport 80 -> jump KUBE-SVC-"
            ),
            "DNAT to 10.244.2.2:8080 (pod default/web-b)",
            "original 10.244.1.2:",
            "reply    10.244.2.2:8080 -> 10.244.1.2:",
            "across the underlay to node-2 (172.18.0.3) by eth0",
            "node node-2: netfilter, first packet",
            "pod default/web-b: answered",
            "it saw the client as 10.244.1.2:",
            "result: reached default/web-b",
        ],
    );
    // The same trace as JSON, for programs.
    let (_, json) = trace(&tb, &["client", "web:80", "-o", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["answered"], "default/web-b");
    assert_eq!(v["path"][0], "pod/default/client");
    assert_eq!(
        v["path"].as_array().unwrap().last().unwrap(),
        "pod/default/web-b"
    );
}

/// A trace from client to `target` on a testbed of its own fails, and says `parts`.
fn fails_saying(what: &str, target: &str, parts: &[&str]) {
    if !common::root() {
        return;
    }
    let tb = Running::up_scenario(what, "trace.yaml");
    tb.wait_synced();
    let (ok, text) = trace(&tb, &["client", target]);
    assert!(!ok, "{text}");
    has(&text, parts);
}

#[test]
fn a_service_without_endpoints_is_rejected_in_the_clients_node() {
    fails_saying(
        "tracenone",
        "none",
        &[
            "rejected by filter KUBE-SERVICES: meta l4proto tcp ip daddr",
            "Service default/none has no endpoints: its selector \"app=nothing\"",
            "result: refused at node node-1",
        ],
    );
}

#[test]
fn an_external_name_is_only_a_cname() {
    fails_saying(
        "traceext",
        "ext",
        &[
            "answer: ext.default.svc.cluster.local. 5 CNAME www.example.com.",
            "Service default/ext is type ExternalName",
            "result: no connection: ext is only an alias (CNAME) for www.example.com.",
        ],
    );
}

#[test]
fn a_name_that_does_not_exist_lists_every_name_tried() {
    fails_saying(
        "tracenx",
        "nosuch",
        &[
            "asked nosuch.default.svc.cluster.local. NXDOMAIN",
            "asked nosuch.svc.cluster.local. NXDOMAIN",
            "asked nosuch.cluster.local. NXDOMAIN",
            "result: no connection: nosuch does not resolve",
        ],
    );
}

/// Runs `steps` on the cluster of `scenarios/trace.yaml` with `testbed run`: the
/// trace steps' expectations are the assertions.
fn run_steps(what: &str, steps: &str) {
    let text = std::fs::read_to_string(repo().join("scenarios/trace.yaml")).unwrap();
    let head = &text[..text.find("\nsteps:\n").unwrap()];
    let name = common::unique_name(what);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("trace.yaml");
    std::fs::write(&file, format!("{head}\nsteps:\n{steps}")).unwrap();
    let out = testbed_bin()
        .args(["run", &file.display().to_string(), "--name", &name])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        common::stderr(&out)
    );
}

#[test]
fn a_node_taken_down_leaves_the_service_without_a_ready_endpoint() {
    if !common::root() {
        return;
    }
    run_steps(
        "tracedown",
        "  - wait: {endpoints: web, ready: 1}
  - node: {name: node-2, state: down}
  - trace: {from: client, to: \"10.96.0.2:80\", timeout: 1s}
    expect: {error: refused, contains: \"10.244.2.2 default/web-b on node-2: not ready (node node-2 is down\"}
",
    );
}

#[test]
fn a_cut_link_is_where_the_packet_was_last_seen() {
    if !common::root() {
        return;
    }
    run_steps(
        "tracecut",
        "  - wait: {endpoints: web, ready: 1}
  - link: {of: node/node-2, state: down}
  - trace: {from: client, to: \"10.96.0.2:80\", timeout: 1s}
    expect: {error: timeout, contains: \"last seen in node node-1, leaving by eth0\"}
  # Later ones may find node-1's neighbour entry for node-2 FAILED (host
  # unreachable instead of a timeout): the same place, the same cause.
  - trace: {from: client, to: \"10.96.0.2:80\", timeout: 1s}
    expect: {contains: \"node node-2 (where 10.244.2.2 lives) never saw it\"}
  - trace: {from: client, to: \"10.96.0.2:80\", timeout: 1s}
    expect: {contains: \"node-2's underlay port is down\"}
",
    );
}

#[test]
fn in_nftables_mode_a_trace_passes_the_maps_and_leaves_the_table_as_it_was() {
    if !common::root() {
        return;
    }
    let tb = Running::up_scenario("tracenft", "trace-nftables.yaml");
    tb.wait_ready("web", 1);
    tb.wait_synced();
    let (ok, text) = trace(&tb, &["client", "web"]);
    assert!(ok, "{text}");
    has(
        &text,
        &[
            "kube-proxy services: ip daddr . meta l4proto . th dport vmap @service-ips -> goto service-",
            "numgen random mod 1 vmap",
            "DNAT to 10.244.2.2:8080 (pod default/web-b) by kube-proxy endpoint-",
            "result: reached default/web-b",
        ],
    );
    let (ok, text) = trace(&tb, &["client", "none"]);
    assert!(!ok);
    has(
        &text,
        &[
            "rejected by kube-proxy reject-chain: reject",
            "sent there by kube-proxy service-endpoints-check: ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        ],
    );
}

#[test]
fn the_picture_of_service_discovery_is_svg_that_names_every_node_pod_and_service() {
    if !common::root() {
        return;
    }
    let tb = Running::up_scenario("graph", "service-discovery.yaml");
    // The scenario's first step: the Service web.
    let web = std::env::temp_dir().join(format!("{}-web.yaml", tb.0));
    std::fs::write(
        &web,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    )
    .unwrap();
    tb.ok(&["apply", "-f", &web.display().to_string()]);
    std::fs::remove_file(&web).unwrap();
    tb.wait_ready("web", 1);
    let svg = tb.ok(&["graph"]);
    let doc = roxmltree::Document::parse(&svg).expect("the picture is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    let mut names = vec!["node-1".to_string(), "node-2".to_string()];
    for kind in ["pods", "services"] {
        let list = tb.json(&["get", kind, "-A"]);
        for o in list["items"].as_array().unwrap() {
            let m = &o["metadata"];
            names.push(format!(
                "{}/{}",
                m["namespace"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            ));
        }
    }
    assert!(names.len() >= 2 + 4 + 3, "{names:?}");
    for n in &names {
        assert!(
            texts.iter().any(|t| t.contains(n.as_str())),
            "the picture does not name {n}"
        );
    }
    // web's arrow goes to pod-b, ready.
    assert!(svg.contains(r#"class="endpoint""#));
    let mermaid = tb.ok(&["graph", "-o", "mermaid"]);
    assert!(
        mermaid.contains("svc_default_web --> pod_default_pod_b"),
        "{mermaid}"
    );
}
