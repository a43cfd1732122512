//! CNAME chains: ExternalName Services answered with their target's records in the
//! same answer, as CoreDNS does, so that resolvers that do not chase CNAMEs (glibc in a
//! pod) still get an address.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use k8s_openapi::api::core::v1::Service;

use super::tests::{ask_dns, build, cfg, port, query, service};
use super::upstream_tests::stub;
use super::Dns;

/// An ExternalName Service `name` in `default` pointing at `target`.
fn external(name: &str, target: &str) -> Service {
    let mut s = service(name, "default", "", vec![]);
    let spec = s.spec.as_mut().unwrap();
    spec.type_ = Some("ExternalName".into());
    spec.external_name = Some(target.into());
    spec.cluster_ip = None;
    s
}

fn web() -> Service {
    service(
        "web",
        "default",
        "10.96.0.20",
        vec![port(Some("http"), "TCP", 80)],
    )
}

/// The answer section in order, as `name TTL TYPE data` lines.
fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

async fn ask(services: Vec<Service>, upstream: Vec<std::net::SocketAddr>, name: &str) -> Message {
    let dns = Dns::new(&cfg(), upstream);
    dns.zone
        .store(std::sync::Arc::new(build(&cfg(), &services, &[], 1)));
    ask_dns(&dns, query(name, RecordType::A), Protocol::Udp, 512).await
}

#[tokio::test]
async fn a_chain_inside_the_cluster_is_followed_cname_first() {
    let services = vec![
        web(),
        external("one", "two.default.svc.cluster.local"),
        external("two", "web.default.svc.cluster.local."),
    ];
    let m = ask(services, Vec::new(), "one.default.svc.cluster.local.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(
        answers(&m),
        [
            "one.default.svc.cluster.local. 5 CNAME two.default.svc.cluster.local.",
            "two.default.svc.cluster.local. 5 CNAME web.default.svc.cluster.local.",
            "web.default.svc.cluster.local. 5 A 10.96.0.20",
        ]
    );
}

#[tokio::test]
async fn loops_and_chains_too_long_end_without_records() {
    // a -> b -> a: each CNAME is followed once, then the loop is seen.
    let services = vec![
        external("a", "b.default.svc.cluster.local"),
        external("b", "a.default.svc.cluster.local"),
    ];
    let m = ask(services, Vec::new(), "a.default.svc.cluster.local.").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "{:?}", answers(&m));

    // c0 -> c1 -> ... -> c13 -> web: longer than CoreDNS follows (10).
    let mut services: Vec<Service> = (0..14)
        .map(|i| {
            external(
                &format!("c{i}"),
                &format!("c{}.default.svc.cluster.local", i + 1),
            )
        })
        .collect();
    services.push(external("c14", "web.default.svc.cluster.local"));
    services.push(web());
    let long = ask(
        services.clone(),
        Vec::new(),
        "c0.default.svc.cluster.local.",
    )
    .await;
    assert!(long.answers.is_empty(), "{:?}", answers(&long));
    // Eight links from the end is short enough.
    let short = ask(services, Vec::new(), "c7.default.svc.cluster.local.").await;
    assert_eq!(short.answers.len(), 9, "{:?}", answers(&short));
    assert_eq!(
        short.answers.last().map(|r| r.data.clone()),
        Some(RData::A("10.96.0.20".parse().unwrap()))
    );
}

#[tokio::test]
async fn an_outside_target_is_resolved_through_the_upstream_and_appended() {
    let (up, asked) = stub(|q: &Message| {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_query(q.queries[0].clone());
        let name = q.queries[0].name().clone();
        assert_eq!(name.to_string(), "www.example.com.");
        m.add_answer(Record::from_rdata(
            name,
            60,
            RData::A("192.0.2.7".parse().unwrap()),
        ));
        m
    })
    .await;
    let services = vec![external("ext", "www.example.com")];
    let m = ask(services.clone(), vec![up], "ext.default.svc.cluster.local.").await;
    assert_eq!(
        answers(&m),
        [
            "ext.default.svc.cluster.local. 5 CNAME www.example.com.",
            "www.example.com. 60 A 192.0.2.7",
        ]
    );
    assert!(m.metadata.authoritative);
    assert!(!m.metadata.recursion_available, "ours, not the upstream's");
    assert_eq!(*asked.lock().unwrap(), 1);

    // Without an upstream: the CNAME alone.
    let m = ask(services, Vec::new(), "ext.default.svc.cluster.local.").await;
    assert_eq!(
        answers(&m),
        ["ext.default.svc.cluster.local. 5 CNAME www.example.com."]
    );
}
