use std::net::SocketAddrV4;

use super::render::{Config, Protocol, ServicePort};
use super::sync::Proxier;
use super::tracer::{self, Outcome, Packet, Tables, Verdict};

fn cfg() -> Config {
    Config {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..Default::default()
    }
}

fn port(
    name: &str,
    port_name: &str,
    proto: Protocol,
    ip: &str,
    port: u16,
    eps: &[&str],
) -> ServicePort {
    ServicePort::cluster_ip(
        ("default", name, port_name),
        proto,
        ip.parse().unwrap(),
        port,
        eps.iter().map(|e| e.parse().unwrap()).collect(),
    )
}

/// web: 3 endpoints on two nodes; dns: UDP and TCP ports with names; sticky: ClientIP
/// affinity; empty: no endpoints.
fn services() -> Vec<ServicePort> {
    let mut sticky = port(
        "sticky",
        "",
        Protocol::Tcp,
        "10.96.0.30",
        80,
        &["10.244.1.4:8080", "10.244.2.4:8080"],
    );
    sticky.affinity_seconds = Some(10800);
    vec![
        port(
            "web",
            "",
            Protocol::Tcp,
            "10.96.0.20",
            80,
            &["10.244.1.3:8080", "10.244.2.3:8080", "10.244.2.5:8080"],
        ),
        port(
            "dns",
            "dns",
            Protocol::Udp,
            "10.96.0.10",
            53,
            &["10.244.1.9:53"],
        ),
        port(
            "dns",
            "dns-tcp",
            Protocol::Tcp,
            "10.96.0.10",
            53,
            &["10.244.1.9:53"],
        ),
        sticky,
        port("empty", "http", Protocol::Tcp, "10.96.0.40", 80, &[]),
    ]
}

/// A node's first sync: everything, then the jumps from the built-in chains.
fn full_text(ports: &[ServicePort]) -> String {
    Proxier::new(cfg()).prepare(ports).text + &super::fixed::ensure_text(&super::fixed::JUMPS)
}

#[test]
fn full_sync_golden() {
    insta::with_settings!({snapshot_path => "../../../snapshots", prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!("proxy-full-sync", full_text(&services()));
    });
}

#[test]
fn one_endpoint_has_no_statistic_and_three_split_evenly() {
    let text = full_text(&services());
    assert!(text.contains("--probability 0.3333333333 -j"), "{text}");
    assert!(text.contains("--probability 0.5000000000 -j"), "{text}");
    let dns_svc = text
        .lines()
        .filter(|l| l.contains("\"default/dns:dns -> 10.244.1.9:53\""))
        .collect::<Vec<_>>();
    assert_eq!(dns_svc.len(), 1);
    assert!(!dns_svc[0].contains("statistic"));
}

fn pkt(dst: &str, proto: Protocol, port: u16) -> Packet {
    Packet {
        src: "10.244.1.2".parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: proto,
        port,
    }
}

fn forward(o: &Outcome) -> SocketAddrV4 {
    match o.verdict {
        Verdict::Forward(a) => a,
        other => panic!("expected forwarding, got {other:?}"),
    }
}

#[test]
fn tracer_spreads_over_every_endpoint_evenly() {
    let tables = Tables::parse(&full_text(&services())).unwrap();
    let out = tracer::trace(&tables, pkt("10.96.0.20", Protocol::Tcp, 80)).unwrap();
    let mut got: Vec<(String, f64)> = out
        .iter()
        .map(|o| (forward(o).to_string(), o.probability))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 3, "{got:?}");
    for (ep, p) in &got {
        assert!((p - 1.0 / 3.0).abs() < 1e-6, "{ep}: {p}");
    }
    assert_eq!(got[0].0, "10.244.1.3:8080");
    assert!(
        out.iter().all(|o| !o.masquerade),
        "pod to pod inside the cluster CIDR is not masqueraded"
    );
}

#[test]
fn tracer_masquerades_hairpin_and_outside_sources() {
    let tables = Tables::parse(&full_text(&services())).unwrap();
    // The only DNS endpoint is the client itself: hairpin, so masqueraded.
    let mut p = pkt("10.96.0.10", Protocol::Udp, 53);
    p.src = "10.244.1.9".parse().unwrap();
    let out = tracer::trace(&tables, p).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(forward(&out[0]).to_string(), "10.244.1.9:53");
    assert!(out[0].masquerade);
    // From a node address (outside the cluster CIDR): masqueraded.
    let mut p = pkt("10.96.0.20", Protocol::Tcp, 80);
    p.src = "172.18.0.2".parse().unwrap();
    assert!(tracer::trace(&tables, p)
        .unwrap()
        .iter()
        .all(|o| o.masquerade));
}

#[test]
fn tracer_rejects_a_service_without_endpoints_and_ignores_other_ports() {
    let tables = Tables::parse(&full_text(&services())).unwrap();
    let out = tracer::trace(&tables, pkt("10.96.0.40", Protocol::Tcp, 80)).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].verdict, Verdict::Rejected);
    // A port the service does not have, and the wrong protocol: untouched.
    for p in [
        pkt("10.96.0.20", Protocol::Tcp, 81),
        pkt("10.96.0.20", Protocol::Udp, 80),
    ] {
        let out = tracer::trace(&tables, p).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(forward(&out[0]), SocketAddrV4::new(p.dst, p.port));
    }
}

#[test]
fn tracer_sees_client_ip_affinity() {
    let tables = Tables::parse(&full_text(&services())).unwrap();
    let out = tracer::trace(&tables, pkt("10.96.0.30", Protocol::Tcp, 80)).unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.affinity));
    let sticky: Vec<&str> = full_text(&services())
        .lines()
        .filter(|l| l.contains("--set"))
        .map(|_| "set")
        .collect();
    assert_eq!(sticky.len(), 2, "each endpoint records the client");
}

#[test]
fn tracer_reads_iptables_save_order_and_reports_unknown_matches() {
    let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n\
        -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
        -A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web cluster IP\" -m tcp --dport 80 -j KUBE-SVC-A\n\
        -A KUBE-SVC-A -p tcp -j DNAT --to-destination 10.244.2.3:8080\nCOMMIT\n";
    let tables = Tables::parse(saved).unwrap();
    let out = tracer::trace(&tables, pkt("10.96.0.20", Protocol::Tcp, 80)).unwrap();
    assert_eq!(forward(&out[0]).to_string(), "10.244.2.3:8080");
    let odd =
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m owner --uid-owner 0 -j DROP\nCOMMIT\n";
    let err = tracer::trace(
        &Tables::parse(odd).unwrap(),
        pkt("10.96.0.20", Protocol::Tcp, 80),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("does not know --uid-owner"),
        "{err}"
    );
    assert!(Tables::parse("-A X -j Y\n").is_err());
}

#[test]
fn partial_sync_writes_only_what_changed() {
    let mut proxier = Proxier::new(cfg());
    let mut ports = services();
    let first = proxier.prepare(&ports);
    assert!(first.full);
    proxier.commit(first);
    assert_eq!(
        proxier.prepare(&ports).text,
        "",
        "nothing changed, nothing written"
    );

    // One endpoint of web goes: web's SVC chain is rewritten, one SEP chain deleted,
    // KUBE-SERVICES untouched.
    ports[0].cluster_endpoints.pop();
    let up = proxier.prepare(&ports);
    assert!(!up.full);
    assert_eq!(up.services_changed, 1);
    assert_eq!(up.chains_deleted, 1);
    assert!(!up.text.contains(":KUBE-SERVICES"), "{}", up.text);
    assert!(!up.text.contains("*filter"), "{}", up.text);
    let svc = ports[0].service_chain();
    assert!(up.text.contains(&format!(":{svc} - [0:0]")), "{}", up.text);
    proxier.commit(up);

    // The Service is deleted: its jump leaves KUBE-SERVICES, its chains are removed.
    let gone = ports.remove(0);
    let up = proxier.prepare(&ports);
    assert!(
        !up.text.contains(":KUBE-SERVICES - [0:0]"),
        "edited in place: {}",
        up.text
    );
    let svc = gone.service_chain();
    let delete = format!("-D KUBE-SERVICES -m comment --comment \"default/web cluster IP\" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j {svc}\n");
    let d = up.text.find(&delete).expect("the jump is deleted");
    assert!(
        d < up.text.find(&format!("-X {svc}")).unwrap(),
        "{}",
        up.text
    );
    assert_eq!(up.chains_deleted, 3);
    proxier.commit(up);

    // After a failed restore the next sync is full, without repeating the jumps.
    proxier.failed();
    let up = proxier.prepare(&ports);
    assert!(up.full);
    assert!(!up.text.contains("-A PREROUTING"), "{}", up.text);
}

#[test]
fn losing_every_endpoint_turns_into_a_reject() {
    let mut proxier = Proxier::new(cfg());
    let mut ports = services();
    let first = proxier.prepare(&ports);
    proxier.commit(first);
    ports[0].cluster_endpoints.clear();
    ports[0].has_endpoints = false;
    let up = proxier.prepare(&ports);
    assert!(
        up.text.contains(
            "*filter\n-I KUBE-SERVICES 1 -m comment --comment \"default/web has no endpoints\""
        ),
        "{}",
        up.text
    );
    assert!(
        up.text
            .contains("-D KUBE-SERVICES -m comment --comment \"default/web cluster IP\""),
        "{}",
        up.text
    );
    assert_eq!(up.chains_deleted, 4, "the SVC chain and its 3 SEP chains");
    proxier.commit(up);

    // Many Services at once: the chain is rewritten instead.
    let many: Vec<ServicePort> = (0..100)
        .map(|i| {
            port(
                &format!("s{i}"),
                "",
                Protocol::Tcp,
                &format!("10.96.1.{i}"),
                80,
                &["10.244.1.3:8080"],
            )
        })
        .collect();
    ports.extend(many);
    let up = proxier.prepare(&ports);
    assert!(
        up.text.contains("*nat\n:KUBE-SERVICES - [0:0]\n"),
        "{}",
        up.text
    );
    assert!(!up.text.contains("-I KUBE-SERVICES"));
}

/// `n` Services of one port and 3 endpoints each.
fn many(n: usize) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let ip = format!("10.96.{}.{}", 10 + i / 250, i % 250 + 1);
            port(
                &format!("svc-{i}"),
                "",
                Protocol::Tcp,
                &ip,
                80,
                &["10.244.1.3:8080", "10.244.1.4:8080", "10.244.2.3:8080"],
            )
        })
        .collect()
}

#[test]
fn a_change_writes_only_its_own_chains_among_thousands() {
    let mut proxier = Proxier::new(cfg());
    let ports = many(2000);
    let first = proxier.prepare(&ports);
    assert_eq!(first.chains_written, 10 + 2000 * 4);
    assert!(
        first.text.starts_with("*filter\n") && first.text.contains("*nat\n-Z\n"),
        "more than 6,000 chains: the nat part starts with -Z"
    );
    proxier.commit(first);

    // One endpoint of svc-7 goes: only svc-7 is rendered and written.
    let mut sp = ports[7].clone();
    sp.cluster_endpoints.pop();
    let up = proxier.prepare_changes(vec![sp.clone()], Vec::new());
    assert_eq!(
        (up.services_changed, up.chains_written, up.chains_deleted),
        (1, 1, 1)
    );
    assert!(!up.text.contains("\n-Z\n"), "{}", up.text);
    assert_eq!(up.text.lines().count(), 8, "{}", up.text);
    proxier.commit(up);

    // Unchanged upserts are skipped; a removed key takes its jump and chains away.
    let up = proxier.prepare_changes(vec![sp.clone(), ports[8].clone()], Vec::new());
    assert!(up.text.is_empty(), "{}", up.text);
    let up = proxier.prepare_changes(Vec::new(), vec![Proxier::key(&ports[9])]);
    let svc9 = ports[9].service_chain();
    assert!(up.text.contains(&format!("-D KUBE-SERVICES -m comment --comment \"default/svc-9 cluster IP\" -m tcp -p tcp -d 10.96.10.10 --dport 80 -j {svc9}\n")), "{}", up.text);
    assert_eq!(up.chains_deleted, 4);
    assert!(!up.text.contains(":KUBE-SERVICES"), "{}", up.text);

    // The same state through prepare() gives the same text.
    let mut now: Vec<ServicePort> = ports.clone();
    now[7] = sp;
    now.remove(9);
    assert_eq!(proxier.prepare(&now).text, up.text);

    // A small cluster's full sync keeps its counters: no -Z.
    assert!(!Proxier::new(cfg())
        .prepare(&many(100))
        .text
        .contains("\n-Z\n"));
}

#[test]
fn a_local_internal_policy_goes_through_kube_svl_and_drops_without_local_endpoints() {
    let mut local = port(
        "web",
        "http",
        Protocol::Tcp,
        "10.96.0.20",
        80,
        &["10.244.1.3:8080"],
    );
    local.internal_local = true;
    local.local_endpoints = std::mem::take(&mut local.cluster_endpoints);
    let text = full_text(std::slice::from_ref(&local));
    let svl = local.internal_chain();
    assert!(svl.starts_with("KUBE-SVL-"), "{svl}");
    assert_eq!(&svl[9..], &local.service_chain()[9..], "the same hash");
    assert!(
        text.contains(&format!(
            "\"default/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j {svl}"
        )),
        "{text}"
    );
    assert!(!text.contains("KUBE-SVC-"), "no cluster-wide chain: {text}");
    // None here, some elsewhere: dropped, not rejected.
    local.local_endpoints.clear();
    let text = full_text(&[local]);
    assert!(
        text.contains("-A KUBE-SERVICES -m comment --comment \"default/web:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j DROP"),
        "{text}"
    );
}

#[test]
fn addresses_are_read_as_upstreams_parse_ip_sloppy_reads_them() {
    use super::tracker::sloppy_ipv4;
    let ip = |s: &str| sloppy_ipv4(s).map(|a| a.to_string());
    assert_eq!(ip("172.30.0.041").as_deref(), Some("172.30.0.41"));
    assert_eq!(ip("010.000.000.001").as_deref(), Some("10.0.0.1"));
    for bad in [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.0.0.1",
        "1.2.3.0004",
        "1.2.3.-4",
        "1..2.3",
        "::1",
    ] {
        assert_eq!(ip(bad), None, "{bad:?}");
    }
}
