//! The handler answering in-process: real DNS messages in and out, no sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::Config;
use super::zone::{Objects, Zone};
use super::Dns;
use crate::api::labels::SERVICE_NAME_LABEL;

/// Keeps the encoded answer, as the UDP or TCP handle would send it.
#[derive(Clone, Default)]
struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut out = Vec::new();
        let mut enc = BinEncoder::new(&mut out);
        enc.set_max_size(self.max);
        let info = response.destructive_emit(&mut enc)?;
        *self.bytes.lock().unwrap() = out;
        Ok(info)
    }
}

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

pub(super) fn port(name: Option<&str>, proto: &str, port: i32) -> ServicePort {
    ServicePort {
        name: name.map(str::to_string),
        protocol: Some(proto.into()),
        port,
        ..Default::default()
    }
}

pub(super) fn service(name: &str, ns: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(name, ns),
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(
    svc: &str,
    ns: &str,
    eps: &[(&str, Option<&str>, bool)],
    ports: &[(&str, i32)],
) -> EndpointSlice {
    let mut m = meta(&format!("{svc}-abc"), ns);
    m.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        svc.to_string(),
    )]));
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, host, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                hostname: host.map(str::to_string),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

pub(super) fn build(
    cfg: &Config,
    services: &[Service],
    slices: &[EndpointSlice],
    serial: u32,
) -> Zone {
    let objects = Objects {
        services: services.iter().collect(),
        slices: slices.iter().collect(),
        ..Default::default()
    };
    Zone::build(cfg, objects, serial)
}

pub(super) fn cfg() -> Config {
    Config::new(
        "10.96.0.10".parse().unwrap(),
        "10.96.0.0/12".parse().unwrap(),
        "10.244.0.0/16".parse().unwrap(),
    )
}

/// web (ClusterIP, a named and an unnamed port), db (headless: db-0 by hostname, two
/// by address, one not ready), ext (ExternalName), lonely (headless, no endpoints),
/// and kube-dns.
pub(super) fn zone() -> Zone {
    let mut ext = service("ext", "default", "", vec![]);
    let spec = ext.spec.as_mut().unwrap();
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some("www.example.com".into());
    spec.cluster_ip = None;
    let services = vec![
        service(
            "web",
            "default",
            "10.96.0.20",
            vec![port(Some("http"), "TCP", 80), port(None, "TCP", 8443)],
        ),
        service("db", "prod", "None", vec![port(Some("pg"), "TCP", 5432)]),
        ext,
        service("lonely", "default", "None", vec![]),
        service(
            "kube-dns",
            "kube-system",
            "10.96.0.10",
            vec![
                port(Some("dns"), "UDP", 53),
                port(Some("dns-tcp"), "TCP", 53),
            ],
        ),
    ];
    let slices = vec![slice(
        "db",
        "prod",
        &[
            ("10.244.1.5", Some("db-0"), true),
            ("10.244.2.6", None, true),
            ("10.244.2.7", None, true),
            ("10.244.1.9", None, false),
        ],
        &[("pg", 5433)],
    )];
    build(&cfg(), &services, &slices, 42)
}

async fn ask_with(zone: Zone, q: Message, protocol: Protocol, max: u16) -> Message {
    let dns = Dns::new(&cfg(), Vec::new());
    dns.zone.store(Arc::new(zone));
    ask_dns(&dns, q, protocol, max).await
}

pub(super) async fn ask_dns(dns: &Dns, q: Message, protocol: Protocol, max: u16) -> Message {
    let req = Request::from_bytes(
        q.to_vec().unwrap(),
        "10.244.1.2:40000".parse::<SocketAddr>().unwrap(),
        protocol,
    )
    .unwrap();
    let capture = Capture {
        max,
        ..Default::default()
    };
    dns.handler()
        .handle_request::<_, TokioTime>(&req, capture.clone())
        .await;
    let bytes = capture.bytes.lock().unwrap().clone();
    Message::from_vec(&bytes).unwrap()
}

/// `name` `rtype` asked of `dns` over UDP, 512 bytes at most.
pub(super) async fn ask_udp(dns: &Dns, name: &str, rtype: RecordType) -> Message {
    ask_dns(dns, query(name, rtype), Protocol::Udp, 512).await
}

pub(super) fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.metadata.recursion_desired = true;
    m
}

async fn ask(name: &str, rtype: RecordType) -> Message {
    ask_with(zone(), query(name, rtype), Protocol::Udp, 512).await
}

/// The answer section as `name TTL TYPE data` lines, sorted.
pub(super) fn lines(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn cluster_ip_service_a_srv_and_ptr() {
    let m = ask("web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.id, 7);
    assert_eq!(
        lines(&m.answers),
        ["web.default.svc.cluster.local. 5 A 10.96.0.20"]
    );

    // Case does not matter.
    let m = ask("WEB.Default.SVC.cluster.LOCAL.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1);

    let m = ask("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(
        lines(&m.answers),
        ["_http._tcp.web.default.svc.cluster.local. 5 SRV 0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        lines(&m.additionals),
        ["web.default.svc.cluster.local. 5 A 10.96.0.20"]
    );

    let m = ask("20.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        lines(&m.answers),
        ["20.0.96.10.in-addr.arpa. 5 PTR web.default.svc.cluster.local."]
    );

    // UDP and TCP SRV of kube-dns.
    let m = ask(
        "_dns._udp.kube-dns.kube-system.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    let m = ask(
        "_dns-tcp._tcp.kube-dns.kube-system.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn headless_service_endpoints_hostnames_srv_and_ptr() {
    let m = ask("db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&m.answers),
        [
            "db.prod.svc.cluster.local. 5 A 10.244.1.5",
            "db.prod.svc.cluster.local. 5 A 10.244.2.6",
            "db.prod.svc.cluster.local. 5 A 10.244.2.7",
        ],
        "ready endpoints only"
    );
    let m = ask("db-0.db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&m.answers),
        ["db-0.db.prod.svc.cluster.local. 5 A 10.244.1.5"]
    );
    let m = ask("10-244-2-6.db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&m.answers),
        ["10-244-2-6.db.prod.svc.cluster.local. 5 A 10.244.2.6"]
    );
    // The not-ready endpoint has no name.
    let m = ask("10-244-1-9.db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

    let m = ask("_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(
        lines(&m.answers),
        [
            "_pg._tcp.db.prod.svc.cluster.local. 5 SRV 0 33 5433 10-244-2-6.db.prod.svc.cluster.local.",
            "_pg._tcp.db.prod.svc.cluster.local. 5 SRV 0 33 5433 10-244-2-7.db.prod.svc.cluster.local.",
            "_pg._tcp.db.prod.svc.cluster.local. 5 SRV 0 33 5433 db-0.db.prod.svc.cluster.local.",
        ],
        "one per ready endpoint, the endpoint's port"
    );
    assert_eq!(m.additionals.len(), 3);

    let m = ask("5.1.244.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        lines(&m.answers),
        ["5.1.244.10.in-addr.arpa. 5 PTR db-0.db.prod.svc.cluster.local."]
    );

    // No ready endpoint: NXDOMAIN, as the specification says.
    let m = ask("lonely.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn external_name_is_a_cname_for_every_type() {
    for t in [RecordType::A, RecordType::CNAME, RecordType::AAAA] {
        let m = ask("ext.default.svc.cluster.local.", t).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            lines(&m.answers),
            ["ext.default.svc.cluster.local. 5 CNAME www.example.com."],
            "{t}"
        );
    }
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let m = ask("nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_eq!(
        lines(&m.authorities),
        ["cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"]
    );

    // The name exists, not with that type: NOERROR, no answer, the SOA. CoreDNS
    // reads one label left of a Service as an endpoint's name, so a bare `_tcp` is an
    // endpoint that does not exist; and a namespace nothing is in does not exist.
    for (name, t, rcode) in [
        (
            "web.default.svc.cluster.local.",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
        (
            "web.default.svc.cluster.local.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
        (
            "default.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        ("svc.cluster.local.", RecordType::A, ResponseCode::NoError),
        (
            "_tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            ResponseCode::NXDomain,
        ),
        (
            "nothing-here.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "10-244-1-7.nothing-here.pod.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
    ] {
        let m = ask(name, t).await;
        assert_eq!(m.metadata.response_code, rcode, "{name} {t}");
        assert!(m.answers.is_empty(), "{name} {t}");
        assert_eq!(m.authorities.len(), 1, "{name} {t}");
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    }

    // A reverse name in the cluster's ranges that nothing has: NXDOMAIN.
    let m = ask("99.9.244.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].name.to_string(), "in-addr.arpa.");
}

#[tokio::test]
async fn version_apex_and_pod_records() {
    let m = ask("dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(
        lines(&m.answers),
        ["dns-version.cluster.local. 28800 TXT 1.1.0"]
    );
    let m = ask("cluster.local.", RecordType::SOA).await;
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
    // The name server is kube-dns, the Service whose ClusterIP the server has.
    let m = ask("cluster.local.", RecordType::NS).await;
    assert_eq!(
        lines(&m.answers),
        ["cluster.local. 5 NS kube-dns.kube-system.svc.cluster.local."]
    );
    assert_eq!(
        lines(&m.additionals),
        ["kube-dns.kube-system.svc.cluster.local. 5 A 10.96.0.10"]
    );

    let m = ask("10-244-1-7.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&m.answers),
        ["10-244-1-7.default.pod.cluster.local. 5 A 10.244.1.7"]
    );
    let m = ask("10-244-1-7.default.pod.cluster.local.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    let m = ask("10-244-1-300.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn outside_names_are_refused_without_an_upstream() {
    let m = ask("www.example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    // A reverse name outside the cluster's ranges is not ours either.
    let m = ask("8.8.8.8.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Not a query, or not class IN.
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    q.metadata.op_code = OpCode::Status;
    let m = ask_with(zone(), q, Protocol::Udp, 512).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
}

#[tokio::test]
async fn a_big_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let eps: Vec<String> = (0..100)
        .map(|i| format!("10.244.{}.{}", 1 + i / 200, 2 + i % 200))
        .collect();
    let ep_refs: Vec<(&str, Option<&str>, bool)> =
        eps.iter().map(|e| (e.as_str(), None, true)).collect();
    let services = [service("big", "default", "None", vec![])];
    let slices = [slice("big", "default", &ep_refs, &[])];
    let z = build(&cfg(), &services, &slices, 1);
    let name = "big.default.svc.cluster.local.";

    let m = ask_with(z.clone(), query(name, RecordType::A), Protocol::Udp, 512).await;
    assert!(m.metadata.truncation, "100 A records do not fit 512 bytes");
    assert!(m.answers.len() < 100);

    // With EDNS the client may take up to 1232 bytes over UDP: still truncated.
    let mut q = query(name, RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    let m = ask_with(z.clone(), q, Protocol::Udp, 1232).await;
    assert!(m.metadata.truncation);

    let m = ask_with(z, query(name, RecordType::A), Protocol::Tcp, u16::MAX).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    assert!(m.answers.iter().all(|r| matches!(r.data, RData::A(_))));
}

#[tokio::test]
async fn the_cluster_domain_and_ttl_are_configurable() {
    let cfg = Config { ttl: 30, ..cfg() }
        .with_domain("Corp.Example.")
        .unwrap();
    let services = [service(
        "web",
        "default",
        "10.96.0.2",
        vec![port(Some("http"), "TCP", 80)],
    )];
    let z = build(&cfg, &services, &[], 1);
    let a = ask_with(
        z.clone(),
        query("web.default.svc.corp.example.", RecordType::A),
        Protocol::Udp,
        512,
    )
    .await;
    assert_eq!(
        lines(&a.answers),
        ["web.default.svc.corp.example. 30 A 10.96.0.2"]
    );
    let nx = ask_with(
        z.clone(),
        query("nope.default.svc.corp.example.", RecordType::A),
        Protocol::Udp,
        512,
    )
    .await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        lines(&nx.authorities),
        ["corp.example. 30 SOA ns.dns.corp.example. hostmaster.corp.example. 1 7200 1800 86400 30"]
    );
    // The default domain is no longer ours.
    let other = ask_with(
        z,
        query("web.default.svc.cluster.local.", RecordType::A),
        Protocol::Udp,
        512,
    )
    .await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    assert!(cfg.with_domain("bad..name").is_err());
}

#[tokio::test]
async fn over_tcp_a_question_is_answered_and_a_broken_one_gets_formerr() {
    let dns = Dns::new(&cfg(), Vec::new());
    dns.zone.store(Arc::new(zone()));
    let peer: SocketAddr = "10.244.1.2:40000".parse().unwrap();
    let q = query("web.default.svc.cluster.local", RecordType::A);
    let a = super::tcp::answer(&dns.handler(), q.to_vec().unwrap(), peer)
        .await
        .expect("an answer");
    let a = Message::from_vec(&a).unwrap();
    assert_eq!(a.metadata.id, q.metadata.id);
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(!a.answers.is_empty());
    // A header that promises a question it lacks: FORMERR with its id.
    let broken = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
    let f = super::tcp::answer(&dns.handler(), broken, peer)
        .await
        .unwrap();
    assert_eq!(&f[..4], b"\x12\x34\x81\x01");
    // Shorter than a header, or a response: no answer.
    assert!(super::tcp::answer(&dns.handler(), vec![1, 2, 3], peer)
        .await
        .is_none());
    let mut resp = q.clone();
    resp.metadata.message_type = MessageType::Response;
    assert!(
        super::tcp::answer(&dns.handler(), resp.to_vec().unwrap(), peer)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn the_zone_is_built_once_even_from_an_empty_store() {
    let dns = Dns::new(&cfg(), Vec::new());
    let m = ask_udp(&dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "not read yet"
    );
    let task = tokio::spawn(super::run(
        Arc::new(crate::api::Store::default()),
        dns.clone(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !dns.zone.load().synced {
        assert!(std::time::Instant::now() < deadline, "never built");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let m = ask_udp(&dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    task.abort();
}
