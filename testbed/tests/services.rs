//! Services with real traffic: the API server, the endpoints controller, kubelets
//! that run pods and probes, and kube-proxy's rules in every node. Needs root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::running::Running;
use common::*;
use testbed::proxy::render::Protocol;
use testbed::proxy::tracer::{self, Packet, Tables, Verdict};

#[test]
// Long because it brings one cluster up once and walks a Deployment and its Service through
// their life; split, each part would build its own.
fn deployment_service_probes_scaling_and_deletion() {
    if !root() {
        return;
    }
    let tb = Running::up("svc");
    let applied = tb.apply("web.yaml");
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    assert!(
        applied.contains("service/web created (clusterIP 10.96.0.2)"),
        "{applied}"
    );
    let ready = tb.wait_ready("web", 3);
    let pods = tb.pods("web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let mut ips: Vec<String> = pods.values().cloned().collect();
    ips.sort();
    assert_eq!(ips, ready);
    // Spread over both nodes (the scheduler takes the emptiest).
    assert!(
        ready.iter().any(|ip| ip.starts_with("10.244.1."))
            && ready.iter().any(|ip| ip.starts_with("10.244.2.")),
        "{ready:?}"
    );

    // 30 requests from client-1 to the ClusterIP: every pod answers, nobody else.
    let cip = tb.cluster_ip("web");
    let url = format!("http://{cip}/hostname");
    let seen = tb.answers("client-1", &url, 30);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        pods.keys().cloned().collect::<Vec<_>>(),
        "{seen:?}"
    );

    // kube-proxy's layout in node-1, and the tracer reads the kernel's own dump.
    let nat = tb.rules("node-1", "iptables");
    for want in ["-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES", "\"default/web:http cluster IP\"", "-m statistic --mode random --probability 0.33333333349", "-j KUBE-MARK-MASQ", "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"] {
        assert!(nat.contains(want), "missing {want:?} in\n{nat}");
    }
    let tables = Tables::parse(&nat).unwrap();
    let out = tracer::trace(
        &tables,
        Packet {
            src: "10.244.1.2".parse().unwrap(),
            dst: cip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        },
    )
    .unwrap();
    let mut traced: Vec<String> = out
        .iter()
        .map(|o| match o.verdict {
            Verdict::Forward(a) => a.ip().to_string(),
            v => panic!("{v:?}"),
        })
        .collect();
    traced.sort();
    assert_eq!(traced, ready);

    // One pod's probe fails: it leaves the endpoints and gets no more requests.
    let (sick, sick_ip) = pods
        .iter()
        .next()
        .map(|(n, ip)| (n.clone(), ip.clone()))
        .unwrap();
    assert!(tb
        .exec(&sick, &["touch", "/tmp/not-ready"])
        .status
        .success());
    let ready = tb.wait_ready("web", 2);
    assert!(!ready.contains(&sick_ip));
    let ep = tb.json(&["get", "endpoints", "web"]);
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["ip"],
        sick_ip.as_str(),
        "{ep}"
    );
    let seen = tb.answers("client-1", &url, 20);
    assert!(!seen.contains_key(&sick), "{seen:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Scale to 1: only that pod answers; the others are gone, namespaces and all.
    tb.ok(&["scale", "deployment/web", "--replicas", "1"]);
    let ready = tb.wait_ready("web", 1);
    let left = tb.pods("web");
    let start = Instant::now();
    while tb.pods("web").len() != 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "{left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (only, only_ip) = tb.pods("web").into_iter().next().unwrap();
    assert_eq!(ready, [only_ip]);
    let seen = tb.answers("client-2", &url, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), [&only], "{seen:?}");
    let gone: Vec<&String> = pods.keys().filter(|p| **p != only).collect();
    for p in gone {
        assert!(
            !tb.exec(p, &["true"]).status.success(),
            "{p} should be gone"
        );
    }

    // Deleting the Service removes its rules and frees its ClusterIP.
    tb.ok(&["delete", "svc/web"]);
    let start = Instant::now();
    loop {
        let nat = tb.rules("node-2", "iptables");
        if !nat.contains("default/web") {
            // The KUBE-SEP chains left are kube-dns's and the API server's, each
            // with its rules.
            let declared: BTreeSet<&str> = nat
                .lines()
                .filter_map(|l| l.strip_prefix(":KUBE-SEP-"))
                .map(|l| l.split(' ').next().unwrap())
                .collect();
            let sep_rules: Vec<&str> = nat
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SEP-"))
                .collect();
            assert!(
                sep_rules.iter().all(|l| l.contains("kube-system/kube-dns")
                    || l.contains("default/kubernetes:https")),
                "{nat}"
            );
            let used: BTreeSet<&str> = sep_rules
                .iter()
                .map(|l| l["-A KUBE-SEP-".len()..].split(' ').next().unwrap())
                .collect();
            assert_eq!(declared, used, "{nat}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{nat}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let again = tb.apply("web.yaml");
    assert!(
        again.contains("service/web created (clusterIP 10.96.0.2)"),
        "{again}"
    );
}

in_both_modes!(
    hairpin_udp_affinity_and_a_service_without_endpoints,
    in_nftables_mode_hairpin_udp_affinity_and_a_service_without_endpoints,
    "more",
    |tb, _| more_services(tb)
);

// Long because it walks one cluster through several Service behaviours; split, each
// would build its own.
fn more_services(tb: Running) {
    tb.apply("more-services.yaml");
    tb.wait_ready("echo-udp", 3);
    tb.wait_ready("sticky", 3);
    let pods = tb.pods("echo");

    // Hairpin: the only pod of `solo` reaches itself through its Service; its own
    // bridge port sends the packet back (hairpin mode), masqueraded to cbr0's address.
    tb.wait_ready("solo", 1);
    let (solo, solo_ip) = tb.pods("solo").into_iter().next().unwrap();
    let cip = tb.cluster_ip("solo");
    let out = tb.exec(
        &solo,
        &["curl", "-sS", "-m", "3", &format!("http://{cip}/hostname")],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        solo,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tb.exec(
        &solo,
        &["curl", "-sS", "-m", "3", &format!("http://{cip}/clientip")],
    );
    let seen_from = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let gateway = format!("{}.1:", solo_ip.rsplit_once('.').unwrap().0);
    assert!(
        seen_from.starts_with(&gateway),
        "the pod saw {seen_from}, expected {gateway}*"
    );
    let sticky = tb.cluster_ip("sticky");

    // UDP through the ClusterIP, from the other node.
    let udp = tb.cluster_ip("echo-udp");
    let mut seen = BTreeMap::new();
    for _ in 0..8 {
        let out = tb.exec(
            "client-2",
            &["sh", "-c", &format!("echo hostname | nc -u -w 1 {udp} 53")],
        );
        *seen
            .entry(String::from_utf8_lossy(&out.stdout).trim().to_string())
            .or_insert(0) += 1;
    }
    assert!(seen.keys().all(|k| pods.contains_key(k)), "{seen:?}");
    assert!(seen.len() >= 2, "UDP is spread too: {seen:?}");

    // A UDP endpoint that goes away has its conntrack entries deleted: the flow's
    // next datagram (same source port) goes to a live pod, not to the old address.
    // (The NATed entry to the ClusterIP, in the client's node, is what matters; the
    // backend's node may hold a plain entry for the pod's address, which steers
    // nothing.)
    // Scaling down removes a pod the ReplicaSet ranks first (on the node with more
    // of them, the most recently ready): find, for each pod, a source port whose flow
    // it answers, so that the one that goes has one.
    let ask = |sport: u16| {
        let out = tb.exec(
            "client-1",
            &[
                "sh",
                "-c",
                &format!("echo hostname | nc -u -p {sport} -w 1 {udp} 53"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut sports: BTreeMap<String, u16> = BTreeMap::new();
    for sport in 41000..41060 {
        sports.entry(ask(sport)).or_insert(sport);
        if pods.keys().all(|p| sports.contains_key(p)) {
            break;
        }
    }
    assert!(
        pods.keys().all(|p| sports.contains_key(p)),
        "60 flows reach every pod: {sports:?}"
    );
    let tracked = |sport: u16, ip: &str| {
        ["node-1", "node-2"].iter().any(|n| {
            let out = tb.exec(
                &format!("node/{n}"),
                &[
                    "conntrack",
                    "-L",
                    "-p",
                    "udp",
                    "--orig-port-src",
                    &sport.to_string(),
                    "--orig-dst",
                    &udp,
                ],
            );
            String::from_utf8_lossy(&out.stdout).contains(&format!("src={ip} "))
        })
    };
    for (pod, ip) in &pods {
        assert!(
            tracked(sports[pod], ip),
            "the flow to {pod} is in conntrack"
        );
    }
    tb.ok(&["scale", "deployment/echo", "--replicas", "2"]);
    let left = tb.wait_ready("echo-udp", 2);
    let gone: Vec<&String> = pods.keys().filter(|p| !left.contains(&pods[*p])).collect();
    assert_eq!(gone.len(), 1, "{left:?}");
    let (gone, gone_ip) = (gone[0].clone(), pods[gone[0]].clone());
    let sport = sports[&gone];
    if tracked(sport, &gone_ip) {
        let dump: Vec<String> = ["node-1", "node-2"]
            .iter()
            .map(|n| {
                let out = tb.exec(&format!("node/{n}"), &["conntrack", "-L", "-p", "udp"]);
                format!("{n}: {}", String::from_utf8_lossy(&out.stdout))
            })
            .collect();
        panic!(
            "the flow to {gone_ip} is still in conntrack after sport {sport}: {dump:#?}\n{}",
            tb.ok(&["get", "endpoints", "echo-udp", "-o", "yaml"])
        );
    }
    let now = ask(sport);
    assert!(
        now != gone && pods.contains_key(&now),
        "the same flow now reaches {now:?}"
    );

    // ClientIP affinity: one client, one backend.
    let seen = tb.answers("client-1", &format!("http://{sticky}/hostname"), 10);
    assert_eq!(seen.len(), 1, "{seen:?}");

    // No endpoints: the node's REJECT answers with "port unreachable", which the
    // client sees as "Connection refused" (a dropped packet would be a timeout).
    let nobody = tb.cluster_ip("nobody");
    let out = tb.exec("client-1", &["nc", "-v", "-z", "-w", "5", &nobody, "80"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Connection refused"), "{err}");
}

#[test]
fn strangers_are_refused_and_bad_manifests_change_nothing() {
    if !root() {
        return;
    }
    let tb = Running::up("auth");
    // uid 65534 (nobody) is neither root nor the owner.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_testbed"),
            "get",
            "pods",
            "-t",
            &tb.0,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied: uid 65534 is neither root nor the owner"),
        "{err}"
    );
    let log = std::fs::read_to_string(testbed::state::log_path(&tb.0)).unwrap();
    assert!(log.contains("refused a connection from uid 65534"), "{log}");
    // A stranger who keeps knocking adds a line now and then, not one per try; every
    // `get` (nodes and watches too) is told why.
    for args in [
        &["get", "pods"][..],
        &["get", "nodes"],
        &["get", "pods", "-w"],
    ]
    .iter()
    .cycle()
    .take(30)
    {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_testbed"))
            .args(*args)
            .args(["-t", &tb.0])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied: uid 65534"),
            "{args:?}: {err}"
        );
    }
    let log = std::fs::read_to_string(testbed::state::log_path(&tb.0)).unwrap();
    let lines = log.matches("refused a connection").count();
    assert!(lines <= 2, "{lines} log lines for 31 refusals:\n{log}");

    let before = tb.ok(&["get", "svc", "-o", "name"]);
    let dir = std::env::temp_dir().join(format!("{}-bad", tb.0));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata: {name: fine}\nspec: {ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  ports:\n    - port: 80\n      targetPort: 99999\n").unwrap();
    let out = tb.cli(&["apply", "-f", &bad.display().to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:13:19: Service default/broken: spec.ports[0].targetPort: Invalid value: 99999: must be between 1 and 65535, inclusive", bad.display())), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let typo = dir.join("typo.yaml");
    std::fs::write(&typo, "apiVersion: v1\nkind: Service\nmetadata: {name: typo}\nspec:\n  selectr: {app: web}\n  ports: [{port: 80}]\n").unwrap();
    let out = tb.cli(&["apply", "-f", &typo.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":5:3: Service typo: spec.selectr: unknown field"),
        "{err}"
    );
    assert_eq!(tb.ok(&["get", "svc", "-o", "name"]), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
// Long because it checks one Service's EndpointSlices field by field against what the
// EndpointSlice controller writes, then the traffic they lead to.
fn endpoint_slices_have_the_controllers_shape() {
    if !root() {
        return;
    }
    // scenarios/multi-port-pods.yaml: Service multi, ports a and b; serves-a serves
    // only a, serves-b only b.
    let tb = Running::up_scenario("slices", "multi-port-pods.yaml");
    tb.wait_ready("multi", 2);
    let list = tb.json(&["get", "endpointslices"]);
    let mut slices: Vec<&serde_json::Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "multi")
        .collect();
    slices.sort_by_key(|s| s["ports"][0]["name"].as_str().unwrap().to_string());
    assert_eq!(slices.len(), 2, "one slice per set of ports: {list:#}");
    for (slice, (port_name, port, pod, node)) in slices.iter().zip([
        ("a", 8080, "serves-a", "node-1"),
        ("b", 9090, "serves-b", "node-2"),
    ]) {
        let name = slice["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("multi-") && name.len() == 11, "{name}");
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "multi");
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["ports"],
            serde_json::json!([{"name": port_name, "port": port, "protocol": "TCP"}])
        );
        let eps = slice["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(
            eps[0]["conditions"],
            serde_json::json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(eps[0]["nodeName"], node);
        assert_eq!(eps[0]["targetRef"]["kind"], "Pod");
        assert_eq!(eps[0]["targetRef"]["name"], pod);
    }
    // Each port reaches a ready endpoint: the pod that serves it.
    for (port, pod) in [("80", "serves-a"), ("81", "serves-b")] {
        let ip = tb.cluster_ip("multi");
        let out = tb.exec(
            "client",
            &[
                "curl",
                "-sS",
                "-m",
                "3",
                &format!("http://{ip}:{port}/hostname"),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            pod,
            "{}",
            stderr(&out)
        );
    }
}
