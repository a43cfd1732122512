use super::*;

fn parse_str(text: &str) -> Result<Scenario, ScenarioError> {
    parse(Path::new("s.yaml"), text)
}

/// The error lines a user would see.
fn errors(text: &str) -> Vec<String> {
    parse_str(text)
        .unwrap_err()
        .to_string()
        .lines()
        .map(String::from)
        .collect()
}

const POD: &str = "  - apiVersion: v1\n    kind: Pod\n    metadata: {name: a}\n    spec: {containers: [{name: c, image: x}]}\n";

#[test]
fn a_minimal_scenario_gets_the_defaults() {
    let s = parse_str("name: demo\n").unwrap();
    assert_eq!(s.cluster, ClusterSpec::with_nodes(1));
    assert!(s.pods.is_empty());
}

#[test]
fn nodes_by_count_or_by_name() {
    let s = parse_str("name: demo\ncluster:\n  nodes: 3\n").unwrap();
    assert_eq!(s.cluster.nodes, ["node-1", "node-2", "node-3"]);
    let s = parse_str("name: demo\ncluster:\n  nodes: [edge, core]\n").unwrap();
    assert_eq!(s.cluster.nodes, ["edge", "core"]);
}

#[test]
fn pods_are_pod_manifests() {
    let s = parse_str(&format!("name: demo\npods:\n{POD}")).unwrap();
    assert_eq!(s.pods.len(), 1);
    assert!(s.pods[0].spec.is_some(), "the spec is kept for the kubelet");
    assert_eq!(
        PodDecl {
            spec: None,
            ..s.pods[0].clone()
        },
        PodDecl {
            spec: None,
            ..PodDecl::new("a")
        }
    );
}

#[test]
fn pods_made_in_code_are_admitted_as_the_benchmarks_make_them() {
    let s = Scenario {
        name: "bench".into(),
        cluster: crate::plan::ClusterSpec::with_nodes(2),
        pods: (0..3).map(|i| PodDecl::new(format!("pod-{i}"))).collect(),
        ..Default::default()
    };
    assert_eq!(check(&s), Vec::new());
}

#[test]
fn bad_yaml_names_the_line() {
    let e = errors("name: demo\ncluster: [\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("s.yaml:"), "{e:?}");
    assert!(e[0].contains("invalid YAML"), "{e:?}");
}

#[test]
fn unknown_fields_name_the_line() {
    assert_eq!(
        errors("name: demo\ncluster:\n  nodes: 2\n  podCidr: 10.0.0.0/16\n"),
        ["s.yaml:4:3: cluster.podCidr: unknown field `podCidr`, expected one of `nodes`, `podCIDR`, `nodeCIDRMaskSize`, `nodeNetwork`, `serviceCIDR`, `dns`, `kubeProxy`, `kubelet`, `controllerManager`, `hosts`, `loadBalancerPool`"]
    );
    assert_eq!(
        errors("name: demo\nstpes: []\n"),
        ["s.yaml:2:1: stpes: unknown field `stpes`, expected one of `name`, `description`, `cluster`, `pods`, `objects`, `steps`"]
    );
    let e = errors(&format!("name: demo\npods:\n{POD}    spek: {{}}\n"));
    assert_eq!(e, ["s.yaml:7:5: pods[0].spek: unknown field"]);
}

#[test]
fn overlapping_cidrs() {
    assert_eq!(
        errors("name: demo\ncluster:\n  podCIDR: 10.0.0.0/8\n"),
        ["s.yaml:3:12: cluster.serviceCIDR: 10.96.0.0/12 overlaps cluster.podCIDR 10.0.0.0/8; the ranges must be disjoint"]
    );
}

#[test]
fn cidrs_must_parse_and_be_networks() {
    let e = errors("name: demo\ncluster:\n  podCIDR: 10.244.1.0/16\n  nodeNetwork: banana\n");
    assert_eq!(
        e,
        [
            "s.yaml:3:12: cluster.podCIDR: 10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?",
            "s.yaml:4:16: cluster.nodeNetwork: \"banana\" is not an IPv4 CIDR like 10.244.0.0/16",
        ]
    );
}

#[test]
fn too_small_ranges() {
    let e = errors("name: demo\ncluster:\n  nodes: 8\n  podCIDR: 10.244.0.0/22\n  nodeNetwork: 172.18.0.0/29\n");
    assert_eq!(
        e,
        [
            "s.yaml:4:12: cluster.podCIDR: 10.244.0.0/22 has 4 subnets of /24; 8 nodes need 9",
            "s.yaml:5:16: cluster.nodeNetwork: 172.18.0.0/29 has 6 usable addresses; a gateway and 8 nodes need 9",
        ]
    );
}

#[test]
fn a_service_cidr_too_small_for_the_dns_address() {
    assert_eq!(
        errors("name: demo\ncluster:\n  serviceCIDR: 10.96.0.0/29\n"),
        ["s.yaml:3:16: cluster.serviceCIDR: 10.96.0.0/29 is too small: the cluster DNS takes its 10th address, so it needs at least /28"]
    );
    let s = parse_str("name: demo\ncluster:\n  serviceCIDR: 10.100.0.0/16\n").unwrap();
    assert_eq!(s.plan("demo").dns_ip.to_string(), "10.100.0.10");
}

#[test]
fn a_node_name_too_long_for_an_interface() {
    let e = errors("name: demo\ncluster:\n  nodes: [ok, a-very-long-node-name]\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("s.yaml:3:15: cluster.nodes[1]: node name \"a-very-long-node-name\" is 21 characters long, at most 15"), "{e:?}");
    assert!(e[0].contains("interface"), "{e:?}");
}

#[test]
fn pod_problems() {
    let text = "name: demo\ncluster: {nodes: 1}\npods:\n\
        - apiVersion: v1\n  kind: Pod\n  metadata: {name: Bad_Name}\n  spec: {containers: []}\n\
        - apiVersion: v2\n  kind: Pod\n  metadata: {name: b}\n  spec: {containers: []}\n";
    let e = errors(text);
    assert_eq!(
        e,
        [
            "s.yaml:6:20: pods[0].metadata.name: pod name \"Bad_Name\" contains 'B': only lowercase letters, digits and '-' are allowed (a DNS-1123 label)",
            "s.yaml:8:15: pods[1].apiVersion: expected v1, found \"v2\"",
        ]
    );
}

#[test]
fn unknown_nodes_and_duplicate_pods() {
    let text = format!(
        "name: demo\ncluster: {{nodes: 1}}\npods:\n{POD}{}",
        POD.replace("spec: {", "spec: {nodeName: node-9, ")
    );
    let e = errors(&text);
    assert_eq!(
        e,
        [
            "s.yaml:10:22: pods[1].metadata.name: pod default/a is declared twice",
            "s.yaml:11:22: pods[1].spec.nodeName: node \"node-9\" is not in the cluster (nodes: node-1)",
        ]
    );
}

#[test]
fn full_nodes() {
    let mut text = String::from("name: demo\ncluster: {nodeCIDRMaskSize: 30}\npods:\n");
    for name in ["a", "b"] {
        text.push_str(&POD.replace("{name: a}", &format!("{{name: {name}}}")));
    }
    let e = errors(&text);
    assert_eq!(
        e,
        ["s.yaml:8:5: pods[1]: node node-1 is full: its /30 pod subnet holds 1 pods"]
    );
}

#[test]
fn an_unreadable_file() {
    let e = load(Path::new("/nonexistent/x.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/x.yaml: cannot read the file"),
        "{e}"
    );
}

#[test]
fn dns_settings_have_defaults_and_can_be_set() {
    let s = parse_str("name: demo\n").unwrap();
    assert_eq!(s.cluster.dns, DnsSettings::default());
    assert_eq!(s.cluster.dns.domain, "cluster.local");
    assert_eq!(s.cluster.dns.ttl, 5);
    let s = parse_str(
        "name: demo\ncluster:\n  dns:\n    domain: Corp.Example.\n    serviceIP: 10.96.0.20\n    ttl: 30\n    upstream: [10.96.0.53, \"192.0.2.1:5353\"]\n    pods: verified\n",
    )
    .unwrap();
    assert_eq!(
        s.cluster.dns,
        DnsSettings {
            domain: "corp.example".into(),
            service_ip: Some("10.96.0.20".parse().unwrap()),
            ttl: 30,
            upstream: vec![
                "10.96.0.53:53".parse().unwrap(),
                "192.0.2.1:5353".parse().unwrap()
            ],
            pods: crate::dns::PodMode::Verified,
        }
    );
    let plan = s.plan("demo");
    assert_eq!(plan.dns_ip.to_string(), "10.96.0.20");
    assert_eq!(plan.cluster_domain, "corp.example");
}

#[test]
fn bad_dns_settings_name_their_lines() {
    assert_eq!(
        errors("name: demo\ncluster:\n  dns:\n    upstream: [10.96.0.53, nope]\n"),
        ["s.yaml:4:28: cluster.dns.upstream[1]: \"nope\" is not an IPv4 address, or address:port, like 10.96.0.53 or 10.96.0.53:5353"]
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  dns:\n    domain: corp..example\n    serviceIP: 10.200.0.10\n    ttl: 7200\n    upstream: [10.96.0.10]\n"),
        [
            "s.yaml:4:13: cluster.dns.domain: \"corp..example\" is not a domain name: label \"\" must not be empty",
            "s.yaml:5:16: cluster.dns.serviceIP: 10.200.0.10 is not a usable address of serviceCIDR 10.96.0.0/12",
            "s.yaml:6:10: cluster.dns.ttl: 7200 s is more than the 3600 s CoreDNS allows",
        ]
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  dns:\n    serviceIP: 10.96.0.1\n    upstream: [\"10.96.0.1:53\"]\n"),
        [
            "s.yaml:4:16: cluster.dns.serviceIP: 10.96.0.1 is the kubernetes Service's address (the first of serviceCIDR)",
            "s.yaml:5:16: cluster.dns.upstream[0]: 10.96.0.1:53 is the cluster DNS itself; its answers would loop",
        ]
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  dns:\n    domian: x\n"),
        ["s.yaml:4:5: cluster.dns.domian: unknown field `domian`, expected one of `domain`, `serviceIP`, `ttl`, `upstream`, `pods`"]
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  dns:\n    pods: secure\n"),
        ["s.yaml:4:11: cluster.dns.pods: \"secure\" is not a pod-record mode: insecure, verified, disabled (CoreDNS's `pods` option)"]
    );
}

#[test]
fn steps_are_checked_with_their_lines() {
    let text = "name: demo\nsteps:\n  - wait: {endpoints: web}\n  - dns: {from: a, name: web, type: AAAAX}\n    expect: {backends: [x]}\n  - conect: {from: a}\n  - connect: {from: a, to: web, port: 80}\n    exec: {in: a, command: ls}\n  - snapshot: {view: nat}\n  - wait: {pod: a, timeout: 5 minutes}\n  - {}\n";
    assert_eq!(
        errors(text),
        [
            "s.yaml:3:12: steps[0].wait.ready: endpoints needs ready: N, the number of ready addresses",
            "s.yaml:4:37: steps[1].dns.type: \"AAAAX\" is not a DNS record type like A, SRV or PTR",
            "s.yaml:5:24: steps[1].expect.backends: backends is expected of connect steps, and this is a dns step",
            "s.yaml:6:5: steps[2].conect: unknown field `conect`, expected one of `name`, `immediately`, `apply`, `delete`, `scale`, `wait`, `dns`, `connect`, `exec`, `snapshot`, `kill`, `readiness`, `node`, `link`, `flush`, `trace`, `fault`, `heal`, `traffic`, `stop`, `sleep`, `expect`",
            "s.yaml:7:5: steps[3]: a step has one action, this one has connect, exec; make them separate steps",
            "s.yaml:9:16: steps[4].snapshot: the nat view needs node",
            "s.yaml:10:29: steps[5].wait.timeout: \"5 minutes\" is not a duration like 30s, 500ms or 2m",
            "s.yaml:11:5: steps[6]: a step needs one action: apply, delete, scale, wait, dns, connect, exec, snapshot, kill, readiness, node, link, flush, trace, fault, heal, traffic, stop, sleep",
        ]
    );
}

#[test]
fn steps_become_actions() {
    let text = "name: demo\nsteps:\n  - apply: {apiVersion: v1, kind: Service, metadata: {name: web}, spec: {ports: [{port: 80}]}}\n  - wait: {endpoints: kube-system/kube-dns, ready: 2, timeout: 500ms}\n  - connect: {from: a, to: web, port: 53, protocol: udp, times: 5}\n    expect: {backendCount: 2}\n  - exec: {in: node/node-1, command: [ip, route]}\n  - snapshot: {view: endpoints, service: web}\n  - name: again\n    snapshot: {view: services}\n  - delete: deployment/kube-system/coredns\n  - node: {name: node-1, state: down}\n";
    let s = parse_str(text).unwrap();
    assert_eq!(s.steps.len(), 8);
    let titles: Vec<String> = s.steps.iter().map(|s| s.action.title()).collect();
    assert_eq!(
        titles,
        [
            "apply 1 inline manifest",
            "wait for endpoints kube-system/kube-dns: 2 ready (timeout 500ms)",
            "connect a -> web:53/UDP x5",
            "exec in node/node-1: ip route",
            "snapshot 05-endpoints: endpoints default/web",
            "snapshot again: services",
            "delete deployment kube-system/coredns",
            "take node node-1 down",
        ]
    );
    assert_eq!(s.steps[2].expect.backend_count, Some(2));
    assert_eq!(s.steps[5].snapshot_name(), Some("again"));
    let probes: Vec<bool> = s.steps.iter().map(|s| s.action.probes()).collect();
    assert_eq!(probes, [false, false, true, true, true, true, false, false]);
    let targets: Vec<_> = s.steps.iter().map(|s| s.action.targets()).collect();
    assert_eq!(targets[2], [("pod", "a")]);
    assert_eq!(targets[3], [("node", "node/node-1")]);
    assert_eq!(targets[7], [("node", "node-1")]);
    assert_eq!(s.steps[7].pos.unwrap().line, 12);
}

#[test]
fn manifests_in_files_are_checked_at_their_lines() {
    let dir = std::env::temp_dir().join(format!("scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports: [{port: 80, protocl: TCP}]\n",
    )
    .unwrap();
    let file = dir.join("s.yaml");
    let e = parse(
        &file,
        "name: demo\nobjects:\n  - bad.yaml\n  - {file: missing.yaml}\n",
    )
    .unwrap_err()
    .to_string();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert_eq!(
        lines[0],
        format!(
            "{}:5:22: Service bad: spec.ports[0].protocl: unknown field",
            dir.join("bad.yaml").display()
        )
    );
    assert!(
        lines[1].starts_with(&format!("{}:4:6: cannot read", file.display())),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scenario_pods_go_through_admission_at_their_lines() {
    // Refused by admission, as the API server refuses such a pod (the scenario's own
    // checks knew nothing of ports or container names).
    let text = "name: demo\npods:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: a}\n    spec:\n      containers:\n      - name: main\n        ports: [{containerPort: 70000}]\n      - name: main\n";
    assert_eq!(
        errors(text),
        [
            "s.yaml:9:33: pods[0].spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "s.yaml:10:15: pods[0].spec.containers[1].name: \"main\" is used by another container",
        ]
    );
}

#[test]
fn kube_proxy_s_mode_is_configured_and_each_node_runs_it() {
    let s = parse_str("name: demo\ncluster: {nodes: 2, kubeProxy: {mode: iptables}}\n").unwrap();
    let plan = s.plan("demo");
    let modes: Vec<_> = plan.nodes.iter().map(|n| n.proxy_mode).collect();
    assert_eq!(modes, [crate::proxy::Mode::Iptables; 2]);
    assert_eq!(
        errors("name: demo\ncluster:\n  kubeProxy: {mode: ipvs}\n"),
        ["s.yaml:3:21: cluster.kubeProxy.mode: \"ipvs\" cannot run here: this kernel has no IPVS; iptables and nftables can"]
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  kubeProxy: {mode: userspace}\n"),
        ["s.yaml:3:21: cluster.kubeProxy.mode: \"userspace\" is not a kube-proxy mode: iptables, ipvs or nftables"]
    );
}

#[test]
fn hosts_outside_the_cluster_and_the_load_balancer_pool() {
    let s = parse_str(
        "name: demo\ncluster:\n  nodes: 2\n  hosts: [laptop, office]\n  loadBalancerPool: 172.18.0.64/30\n",
    )
    .unwrap();
    let plan = crate::plan::Plan::new("demo", &s.cluster, &[]);
    let hosts: Vec<String> = plan
        .hosts
        .iter()
        .map(|h| format!("{} {} {}", h.name, h.ip, h.netns))
        .collect();
    assert_eq!(
        hosts,
        [
            "laptop 172.18.0.4 tb.demo.laptop",
            "office 172.18.0.5 tb.demo.office"
        ]
    );
    assert_eq!(plan.host_netns("outside"), Some("tb.demo"));
    assert_eq!(plan.host_netns("office"), Some("tb.demo.office"));
    assert_eq!(plan.host_netns("node-1"), None);
    let pool: Vec<String> = plan
        .load_balancer_addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        pool,
        ["172.18.0.64", "172.18.0.65", "172.18.0.66", "172.18.0.67"]
    );
    let e = errors(
        "name: demo\ncluster:\n  nodes: 2\n  hosts: [outside, node-1, Laptop, a, a]\n  loadBalancerPool: 172.18.0.3-172.18.0.9\n",
    );
    assert_eq!(
        e,
        [
            "s.yaml:4:11: cluster.hosts[0]: host name \"outside\" is the underlay router's, which every testbed has",
            "s.yaml:4:20: cluster.hosts[1]: host name \"node-1\" is a node's",
            "s.yaml:4:28: cluster.hosts[2]: host name \"Laptop\" contains 'L': only lowercase letters, digits and '-' are allowed (a DNS-1123 label) (it names the host's interface on the underlay)",
            "s.yaml:4:39: cluster.hosts[4]: host \"a\" is listed twice",
            "s.yaml:5:21: cluster.loadBalancerPool: the load balancer's addresses 172.18.0.3-172.18.0.9 overlap the gateway, nodes and hosts (172.18.0.1-172.18.0.8); name a pool after them",
        ]
    );
    for (pool, why) in [
        (
            "10.0.0.1-10.0.0.9",
            "10.0.0.1-10.0.0.9 is not inside nodeNetwork 172.18.0.0/24",
        ),
        (
            "172.18.0.9-172.18.0.8",
            "\"172.18.0.9-172.18.0.8\" is not an address range",
        ),
    ] {
        let e = errors(&format!(
            "name: demo\ncluster:\n  loadBalancerPool: {pool}\n"
        ));
        assert!(e.len() == 1 && e[0].contains(why), "{pool}: {e:?}");
    }
}

#[test]
fn node_health_settings_are_checked_with_their_lines() {
    let s = parse_str(
        "name: demo\ncluster:\n  kubelet: {nodeLeaseDurationSeconds: 4}\n  controllerManager: {nodeMonitorGracePeriod: 3s}\n",
    )
    .unwrap();
    let t = s.cluster.node_health;
    assert_eq!(t.lease_duration, std::time::Duration::from_secs(4));
    assert_eq!(t.renew_interval(), std::time::Duration::from_secs(1));
    assert_eq!(t.grace_period, std::time::Duration::from_secs(3));
    let d = parse_str("name: demo\n").unwrap().cluster.node_health;
    assert_eq!(
        (d.lease_duration.as_secs(), d.grace_period.as_secs()),
        (40, 50),
        "upstream's defaults"
    );
    assert_eq!(
        errors("name: demo\ncluster:\n  kubelet: {nodeLeaseDurationSeconds: 0}\n  controllerManager: {nodeMonitorGracePeriod: 11m}\n"),
        [
            "s.yaml:3:39: cluster.kubelet.nodeLeaseDurationSeconds: 0 is outside 1..3600",
            "s.yaml:4:47: cluster.controllerManager.nodeMonitorGracePeriod: 11m is outside 500ms..10m",
        ]
    );
}
