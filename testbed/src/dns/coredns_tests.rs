//! CoreDNS's own unit tests of its `kubernetes` plugin, run against our handler in
//! process: the fixtures and cases are transcribed in `testbed/tests/coredns/` (with
//! upstream's attribution), and every case is checked as upstream's
//! `test.SortAndCheck` and `test.CNAMEOrder` check it.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::xfer::Protocol;
use serde::Deserialize;
use serde_json::Value;

use super::config::{Config, PodMode};
use super::tests::{ask_dns, query};
use super::upstream_tests::stub;
use super::zone::{Objects, Zone};
use super::Dns;
use crate::api::Object;

const FIXTURES: &str = include_str!("../../tests/coredns/fixtures.yaml");
const CASES: &str = include_str!("../../tests/coredns/cases.yaml");

#[derive(Deserialize)]
struct Fixture {
    namespaces: Vec<String>,
    objects: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suites {
    suites: Vec<Suite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Suite {
    test: String,
    source: String,
    fixture: String,
    #[serde(default)]
    zones: Vec<String>,
    pods: Option<String>,
    #[serde(rename = "dnsIP")]
    dns_ip: Option<String>,
    synced: Option<bool>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    qname: String,
    qtype: String,
    rcode: String,
    #[serde(default)]
    answer: Vec<String>,
    #[serde(default)]
    ns: Vec<String>,
    #[serde(default)]
    extra: Vec<String>,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    rcode_only: bool,
    upstream: Option<Upstub>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Upstub {
    qname: String,
    qtype: String,
    truncated: bool,
    answer: Vec<String>,
}

fn load<T: serde::de::DeserializeOwned>(source: &str) -> T {
    let (value, _) = crate::yaml::load(source).expect("valid YAML");
    serde_json::from_value(value).expect("the transcription's shape")
}

fn fqdn(s: &str) -> String {
    if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

fn rcode(s: &str) -> ResponseCode {
    match s {
        "Success" => ResponseCode::NoError,
        "NameError" => ResponseCode::NXDomain,
        "ServerFailure" => ResponseCode::ServFail,
        "Refused" => ResponseCode::Refused,
        other => panic!("rcode {other} is not transcribed"),
    }
}

/// A record as upstream's `Section` compares it: owner, TTL, type, and the data it
/// looks at for that type (for SOA, only the primary name server).
fn compared(name: &str, ttl: u32, rtype: &str, data: &[&str]) -> String {
    let data = match rtype {
        "SOA" => fqdn(data[0]),
        "SRV" => format!("{} {} {} {}", data[0], data[1], data[2], fqdn(data[3])),
        "PTR" | "CNAME" | "NS" => fqdn(data[0]),
        "TXT" => data.concat().replace('"', ""),
        "A" | "AAAA" => data[0].parse::<IpAddr>().expect("an address").to_string(),
        other => panic!("type {other} is not transcribed"),
    };
    format!("{} {ttl} {rtype} {data}", fqdn(name))
}

/// An upstream zone-file line (`name TTL IN TYPE data...`) as compared.
fn expected(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[2], "IN", "{line}");
    compared(f[0], f[1].parse().expect("a TTL"), f[3], &f[4..])
}

/// One of our records as compared.
fn ours(r: &Record) -> String {
    let data = r.data.to_string();
    let fields: Vec<&str> = match &r.data {
        RData::SOA(soa) => {
            return compared(&r.name.to_string(), r.ttl, "SOA", &[&soa.mname.to_string()])
        }
        RData::TXT(txt) => {
            let text: String = txt
                .txt_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            return compared(&r.name.to_string(), r.ttl, "TXT", &[&text]);
        }
        _ => data.split_whitespace().collect(),
    };
    compared(
        &r.name.to_string(),
        r.ttl,
        &r.record_type().to_string(),
        &fields,
    )
}

fn section(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(ours).collect();
    v.sort();
    v
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| expected(l)).collect();
    v.sort();
    v
}

/// Upstream's `test.CNAMEOrder`: no CNAME comes after a record of its target.
fn cname_order(answers: &[Record]) -> Result<(), String> {
    for (i, r) in answers.iter().enumerate() {
        if let RData::CNAME(CNAME(target)) = &r.data {
            if answers[..i]
                .iter()
                .any(|a| a.name.to_string() == target.to_string())
            {
                return Err(format!(
                    "CNAME to {target} found after its target's records"
                ));
            }
        }
    }
    Ok(())
}

/// A record of an Upstub's answer (upstream's only have A, AAAA and CNAME).
fn record(line: &str) -> Record {
    let f: Vec<&str> = line.split_whitespace().collect();
    let name = Name::from_ascii(fqdn(f[0])).unwrap();
    let data = match f[3] {
        "A" => RData::A(A(f[4].parse().unwrap())),
        "AAAA" => RData::AAAA(AAAA(f[4].parse().unwrap())),
        "CNAME" => RData::CNAME(CNAME(Name::from_ascii(fqdn(f[4])).unwrap())),
        other => panic!("upstream type {other} is not transcribed"),
    };
    Record::from_rdata(name, f[1].parse().unwrap(), data)
}

/// Upstream's Upstub: its canned answer, less a CNAME owned by its question's name
/// when the type asked is not CNAME.
fn upstub(u: Upstub) -> impl Fn(&Message) -> Message + Send + Sync + 'static {
    move |q: &Message| {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.truncation = u.truncated;
        m.add_query(q.queries[0].clone());
        for line in &u.answer {
            let r = record(line);
            let own_cname = r.record_type() == RecordType::CNAME
                && r.name.to_string() == fqdn(&u.qname)
                && u.qtype != "CNAME";
            if !own_cname {
                m.add_answer(r);
            }
        }
        m
    }
}

fn config(suite: &Suite) -> Config {
    let zones: Vec<Name> = if suite.zones.is_empty() {
        vec![Name::from_ascii("cluster.local.").unwrap()]
    } else {
        suite
            .zones
            .iter()
            .map(|z| Name::from_ascii(z).unwrap())
            .collect()
    };
    let dns_ip = suite.dns_ip.as_deref().unwrap_or("127.0.0.1");
    Config {
        domain: zones[0].clone(),
        reverse_zones: zones[1..].to_vec(),
        fallthrough: false,
        pods: suite
            .pods
            .as_deref()
            .map(|p| PodMode::parse(p).expect("a pod mode"))
            .unwrap_or_default(),
        ..Config::new(
            dns_ip.parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
            "10.244.0.0/16".parse().unwrap(),
        )
    }
}

fn zone(cfg: &Config, fixture: &Fixture) -> Zone {
    let objects: Vec<Object> = fixture
        .objects
        .iter()
        .map(|v| {
            let kind = crate::api::Kind::parse(v["kind"].as_str().unwrap_or_default());
            Object::from_value(kind.expect("a kind"), v.clone()).expect("a fixture object")
        })
        .collect();
    let mut input = Objects {
        namespaces: fixture.namespaces.iter().map(String::as_str).collect(),
        ..Default::default()
    };
    for o in &objects {
        match o {
            Object::Service(s) => input.services.push(s),
            Object::EndpointSlice(s) => input.slices.push(s),
            Object::Pod(p) => input.pods.push(p),
            other => panic!("{:?} is not in upstream's fixtures", other.kind()),
        }
    }
    Zone::build(cfg, input, 1499347823)
}

/// Every case of one suite; the failures, each with its suite and case number.
async fn run(suite: &Suite, fixture: &Fixture) -> Vec<String> {
    let cfg = config(suite);
    let mut z = zone(&cfg, fixture);
    z.synced = suite.synced.unwrap_or(true);
    let z = Arc::new(z);
    let mut failures = Vec::new();
    for (i, case) in suite.cases.iter().enumerate() {
        let upstream = match &case.upstream {
            Some(u) => vec![stub(upstub(u.clone())).await.0],
            None => Vec::new(),
        };
        let dns = Dns::new(&cfg, upstream);
        dns.zone.store(z.clone());
        let qtype: RecordType = case.qtype.parse().expect("a type");
        // Over TCP, as upstream's recorder has no size limit.
        let m = ask_dns(
            &dns,
            query(&fqdn(&case.qname), qtype),
            Protocol::Tcp,
            u16::MAX,
        )
        .await;
        let at = format!("{} case {i} ({} {})", suite.test, case.qname, case.qtype);
        let mut check = |what: &str, got: Vec<String>, want: Vec<String>| {
            if got != want {
                failures.push(format!("{at}: {what}\n    got  {got:?}\n    want {want:?}"));
            }
        };
        check(
            "rcode",
            vec![m.metadata.response_code.to_string()],
            vec![rcode(&case.rcode).to_string()],
        );
        if case.rcode_only {
            continue;
        }
        check("answer", section(&m.answers), sorted(&case.answer));
        check("authority", section(&m.authorities), sorted(&case.ns));
        check("additional", section(&m.additionals), sorted(&case.extra));
        check(
            "truncated",
            vec![m.metadata.truncation.to_string()],
            vec![case.truncated.to_string()],
        );
        if let Err(e) = cname_order(&m.answers) {
            failures.push(format!("{at}: {e}"));
        }
    }
    failures
}

#[tokio::test]
async fn coredns_kubernetes_plugin_cases_pass() {
    let fixtures: std::collections::BTreeMap<String, Fixture> = load(FIXTURES);
    let suites: Suites = load(CASES);
    let mut failures = Vec::new();
    let mut count = 0;
    for suite in &suites.suites {
        assert!(suite.source.starts_with("plugin/kubernetes/"));
        let fixture = &fixtures[&suite.fixture];
        failures.extend(run(suite, fixture).await);
        count += suite.cases.len();
    }
    assert_eq!(count, 83, "every transcribed case runs");
    assert!(
        failures.is_empty(),
        "{} of {count} CoreDNS cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
