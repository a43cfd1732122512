//! The cluster DNS with real tools in pods: `dig`, `getent`, `curl` through the pod's
//! resolv.conf, to kube-dns's ClusterIP, through the node's DNAT, to hickory-server in
//! the coredns pods. Needs root.

mod common;

use common::running::Running;
use common::*;

fn dig(tb: &Running, args: &[&str]) -> String {
    let mut cmd = vec!["dig", "+time=2", "+tries=1"];
    cmd.extend(args);
    let out = tb.exec("client-1", &cmd);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Packets that went through kube-dns's UDP endpoints on `node`.
fn dns_dnat_packets(tb: &Running, node: &str) -> u64 {
    let out = tb.exec(
        &format!("node/{node}"),
        &["iptables-save", "-c", "-t", "nat"],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"kube-system/kube-dns:dns ->"))
        .map(|l| {
            let counters = l.split(']').next().unwrap().trim_start_matches('[');
            counters.split(':').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
// Long because it brings one cluster up once and asks every kind of name from its pods;
// split, each part would build its own.
fn pods_find_services_by_name() {
    if !root() {
        return;
    }
    let tb = Running::up("dns");
    tb.apply("web.yaml");
    tb.apply("dns.yaml");
    tb.wait_ready("web", 3);
    tb.wait_ready("kube-system/kube-dns", 2);
    let db = tb.wait_ready("db", 2);
    tb.wait_ready("many", 60);
    let web = tb.cluster_ip("web");

    // A, by its full name, by search path, through libc, and over TCP.
    assert_eq!(dig(&tb, &["+short", "web.default.svc.cluster.local"]), web);
    assert_eq!(dig(&tb, &["+search", "+short", "web"]), web);
    assert_eq!(
        dig(&tb, &["+tcp", "+short", "web.default.svc.cluster.local"]),
        web
    );
    let out = tb.exec("client-1", &["getent", "hosts", "web"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        [web.as_str(), "web.default.svc.cluster.local"]
    );
    let out = tb.exec(
        "client-2",
        &["curl", "-sS", "-m", "3", "http://web/hostname"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("web-"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SRV and PTR of a ClusterIP Service.
    assert_eq!(
        dig(
            &tb,
            &["+short", "SRV", "_http._tcp.web.default.svc.cluster.local"]
        ),
        "0 100 80 web.default.svc.cluster.local."
    );
    assert_eq!(
        dig(&tb, &["+short", "-x", &web]),
        "web.default.svc.cluster.local."
    );

    // Headless: the ready endpoints, their hostnames, SRV per endpoint, PTR.
    assert_eq!(
        sorted_lines(&dig(&tb, &["+short", "db.default.svc.cluster.local"])),
        db
    );
    let db0 = tb.json(&["get", "pod", "db-0"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        dig(&tb, &["+short", "db-0.db.default.svc.cluster.local"]),
        db0
    );
    assert_eq!(
        sorted_lines(&dig(
            &tb,
            &["+short", "SRV", "_pg._tcp.db.default.svc.cluster.local"]
        )),
        [
            "0 50 5432 db-0.db.default.svc.cluster.local.",
            "0 50 5432 db-1.db.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        dig(&tb, &["+short", "-x", &db0]),
        "db-0.db.default.svc.cluster.local."
    );

    // The files kubelet writes: hosts with the pod's own names, resolv.conf from
    // dnsPolicy and dnsConfig.
    let hosts = tb.exec("db-0", &["cat", "/etc/hosts"]);
    let hosts = String::from_utf8_lossy(&hosts.stdout);
    assert!(
        hosts.ends_with(&format!(
            "\n{db0}\tdb-0.db.default.svc.cluster.local\tdb-0\n"
        )),
        "{hosts}"
    );
    let resolv = tb.exec("custom-dns", &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        String::from_utf8_lossy(&resolv.stdout),
        "search svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:1\n"
    );
    let out = tb.exec("custom-dns", &["getent", "hosts", "web.default"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&format!("{web} ")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // ExternalName: a CNAME.
    assert_eq!(
        dig(&tb, &["+short", "ext.default.svc.cluster.local"]),
        "www.example.com."
    );

    // A name that does not exist: NXDOMAIN with the SOA; one that exists without
    // that type: NOERROR and no answer.
    let nx = dig(&tb, &["nope.default.svc.cluster.local"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("IN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local."),
        "{nx}"
    );
    let nodata = dig(&tb, &["AAAA", "web.default.svc.cluster.local"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    // Outside the cluster, without an upstream: refused at once.
    let out = dig(&tb, &["www.example.com"]);
    assert!(out.contains("status: REFUSED"), "{out}");

    // 60 endpoints do not fit 512 bytes: truncated over UDP, whole over TCP.
    let udp = dig(
        &tb,
        &["+noedns", "+ignore", "many.default.svc.cluster.local"],
    );
    assert!(udp.contains("flags: qr aa tc"), "{udp}");
    let retried = dig(&tb, &["+noedns", "many.default.svc.cluster.local"]);
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );
    assert!(retried.contains("ANSWER: 60,"), "{retried}");
}

#[test]
fn answers_follow_changes_and_pass_through_the_nodes_dnat() {
    if !root() {
        return;
    }
    let tb = Running::up("dns-live");
    tb.wait_ready("kube-system/kube-dns", 2);

    // client-1 is on node-1: its queries to 10.96.0.10 are DNATed there.
    let before = dns_dnat_packets(&tb, "node-1");
    for _ in 0..10 {
        assert_eq!(
            dig(&tb, &["+short", "kubernetes.default.svc.cluster.local"]),
            "10.96.0.1"
        );
    }
    let after = dns_dnat_packets(&tb, "node-1");
    assert!(
        after >= before + 10,
        "kube-dns DNAT packets {before} -> {after}"
    );

    // A Service created is in the next answer; deleted, it is gone from the next.
    let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: fresh}\nspec:\n  selector: {app: none}\n  ports: [{port: 80}]\n";
    let f = std::env::temp_dir().join(format!("{}-fresh.yaml", tb.0));
    std::fs::write(&f, manifest).unwrap();
    tb.ok(&["apply", "-f", &f.display().to_string()]);
    let ip = tb.cluster_ip("fresh");
    assert_eq!(dig(&tb, &["+short", "fresh.default.svc.cluster.local"]), ip);
    tb.ok(&["delete", "service/fresh"]);
    let gone = dig(&tb, &["fresh.default.svc.cluster.local"]);
    assert!(gone.contains("status: NXDOMAIN"), "{gone}");
    std::fs::remove_file(f).unwrap();
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_the_server_keeps_serving() {
    if !root() {
        return;
    }
    let tb = Running::up("dns-bad");
    tb.wait_ready("kube-system/kube-dns", 2);
    // From a pod, over UDP to the ClusterIP: random bytes, a short header, a header
    // that promises a question it lacks, and a question cut in the middle.
    let script = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
def send(b):
    s.sendto(b, ("10.96.0.10", 53))
    try:
        r, _ = s.recvfrom(4096)
        return "rcode=%d id=%02x%02x" % (r[3] & 15, r[0], r[1])
    except socket.timeout:
        return "none"
for i in range(50):
    send(os.urandom(1 + i * 7))
print(send(b"\x12\x34\x01"))
print(send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"))
print(send(b"\x12\x35\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x07def"))
"#;
    let out = tb.exec("client-1", &["python3", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["none", "rcode=1 id=1234", "rcode=1 id=1235"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dig(&tb, &["+short", "kubernetes.default.svc.cluster.local"]),
        "10.96.0.1",
        "still serving"
    );
}

#[test]
fn domain_address_ttl_and_upstream_come_from_the_scenario() {
    if !root() {
        return;
    }
    // scenarios/custom-dns.yaml: corp.example, kube-dns 10.96.0.20, TTL 30, upstream 10.96.0.53.
    let tb = Running::up_scenario("dns-custom", "custom-dns.yaml");
    assert_eq!(
        tb.json(&["get", "svc", "kube-dns", "-n", "kube-system"])["spec"]["clusterIP"],
        "10.96.0.20"
    );
    tb.wait_ready("kube-system/kube-dns", 2);
    let resolv = tb.exec("client-1", &["cat", "/etc/resolv.conf"]);
    assert_eq!(
        String::from_utf8_lossy(&resolv.stdout),
        "search default.svc.corp.example svc.corp.example corp.example\nnameserver 10.96.0.20\noptions ndots:5\n"
    );
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        words(dig(
            &tb,
            &["+noall", "+answer", "kubernetes.default.svc.corp.example"]
        )),
        "kubernetes.default.svc.corp.example. 30 IN A 10.96.0.1"
    );
    let nx = dig(&tb, &["nope.default.svc.corp.example"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        words(nx.clone())
            .contains("corp.example. 30 IN SOA ns.dns.corp.example. hostmaster.corp.example."),
        "{nx}"
    );
    // The upstream Service has no endpoints yet: once the nodes have its rules, it is
    // REJECTed, so SERVFAIL at once. (Before they do, the question goes nowhere and
    // dig times out: that raced once on a clean clone.)
    tb.apply("upstream-dns.yaml");
    tb.wait_synced();
    let early = dig(&tb, &["www.example.com"]);
    assert!(
        early.contains("status: SERVFAIL") || early.contains("192.0.2.7"),
        "{early}"
    );
    tb.wait_ready("upstream-dns", 1);
    // Names outside the domain go to the upstream server (a pod on node-2), over
    // UDP and TCP, asked from the coredns pod through its node's DNAT.
    assert_eq!(dig(&tb, &["+short", "www.example.com"]), "192.0.2.7");
    assert_eq!(
        dig(&tb, &["+tcp", "+short", "www.example.com"]),
        "192.0.2.7"
    );
    // The default domain is not this cluster's: it goes upstream like any outside name.
    assert_eq!(
        dig(&tb, &["+short", "web.default.svc.cluster.local"]),
        "192.0.2.7"
    );
    // libc through the search path: each cluster suffix is NXDOMAIN, then the name itself.
    let out = tb.exec("client-1", &["getent", "hosts", "www.example.com"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        Some("192.0.2.7")
    );
    // An upstream answer is not authoritative here: no AA flag, and RA set.
    let full = dig(&tb, &["www.example.com"]);
    assert!(full.contains("flags: qr rd ra;"), "{full}");
}

#[test]
// Long because it brings one cluster up once and checks, with real programs in its pods,
// each answer a real cluster gives that this one once gave otherwise.
fn external_names_hostnames_and_case_as_a_real_cluster_has_them() {
    if !root() {
        return;
    }
    // scenarios/custom-dns.yaml: domain corp.example, upstream 10.96.0.53.
    let tb = Running::up_scenario("dns-real", "custom-dns.yaml");
    tb.apply("upstream-dns.yaml");
    tb.apply("web.yaml");
    tb.apply("external-names.yaml");
    tb.apply("hostnames.yaml");
    tb.wait_ready("kube-system/kube-dns", 2);
    tb.wait_ready("upstream-dns", 1);
    tb.wait_ready("web", 3);
    tb.wait_ready("www", 3);
    let web = tb.cluster_ip("web");
    let words = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    // An ExternalName inside the cluster (the CNAME, then the target's address from the
    // cluster's records) and one outside it (then what the upstream server, a pod,
    // answers), in one answer each: glibc and curl get there.
    for (name, answer, hosts) in [
        (
            "inside",
            format!("inside.default.svc.corp.example. 30 IN CNAME web.default.svc.corp.example. web.default.svc.corp.example. 30 IN A {web}"),
            format!("{web} web.default.svc.corp.example inside.default.svc.corp.example"),
        ),
        (
            "outside",
            "outside.default.svc.corp.example. 30 IN CNAME web.example.com. web.example.com. 60 IN A 10.96.0.80".to_string(),
            "10.96.0.80 web.example.com outside.default.svc.corp.example".to_string(),
        ),
    ] {
        let fqdn = format!("{name}.default.svc.corp.example");
        assert_eq!(
            words(dig(&tb, &["+noall", "+answer", &fqdn]).as_bytes()),
            answer
        );
        let out = tb.exec("client-1", &["getent", "hosts", name]);
        assert_eq!(words(&out.stdout), hosts, "exit {:?}", out.status);
        let url = format!("http://{name}/hostname");
        let out = tb.exec("client-1", &["curl", "-sS", "-m", "3", &url]);
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("web-"),
            "{name}: {}",
            stderr(&out)
        );
    }

    // Hostnames: the pod's name, or spec.hostname; the FQDN with a subdomain.
    for (pod, short, full) in [
        ("plain", "plain", "plain"),
        ("db-2", "db-2", "db-2.db.default.svc.corp.example"),
        (
            "fqdn",
            "fqdn.db.default.svc.corp.example",
            "fqdn.db.default.svc.corp.example",
        ),
    ] {
        let out = tb.exec(pod, &["hostname"]);
        assert_eq!(words(&out.stdout), short, "{pod}: {}", stderr(&out));
        let out = tb.exec(pod, &["hostname", "-f"]);
        assert_eq!(words(&out.stdout), full, "{pod}: {}", stderr(&out));
    }
    // A node has none of its own: it shows the machine's.
    let node = tb.exec("node/node-1", &["hostname"]);
    let machine = std::process::Command::new("hostname").output().unwrap();
    assert_eq!(words(&node.stdout), words(&machine.stdout));

    // The question's case is kept in the owner names, as CoreDNS keeps it.
    assert_eq!(
        words(dig(&tb, &["+noall", "+answer", "WeB.DeFaUlT.SvC.CoRp.ExAmPlE"]).as_bytes()),
        format!("WeB.DeFaUlT.SvC.CoRp.ExAmPlE. 30 IN A {web}")
    );
    let nx = words(
        dig(
            &tb,
            &["+noall", "+authority", "NoPe.DeFaUlT.SvC.CoRp.ExAmPlE"],
        )
        .as_bytes(),
    );
    assert!(
        nx.starts_with("CoRp.ExAmPlE. 30 IN SOA ns.dns.CoRp.ExAmPlE."),
        "{nx}"
    );
}
