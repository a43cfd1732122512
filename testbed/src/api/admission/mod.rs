//! Admission: what the API server checks and fills in before it stores an object.
//! Validation follows Kubernetes' rules for the fields the testbed acts on; fields it
//! does not emulate are accepted and reported as ignored, never silently misread.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::object::Object;

mod deployment;
use crate::names;

/// One thing wrong with an object, at a field path such as `spec.ports[1].name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

pub(super) fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// An object that passed, with its defaults filled in, and the fields it has that the
/// testbed does not act on.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub object: Object,
    pub ignored: Vec<String>,
}

pub const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// Validates `obj` (replacing `old`, if it exists) and fills in defaults. A Service's
/// ClusterIP is checked for form here; its allocation is the caller's.
pub fn admit(obj: Object, old: Option<&Object>) -> Result<Admitted, Vec<Problem>> {
    let mut problems = Vec::new();
    check_meta(&obj, &mut problems);
    check_size(&obj, &mut problems);
    let ignored = super::ignored::fields(&obj);
    let object = match obj {
        Object::Service(s) => Object::Service(service(s, old, &mut problems)),
        Object::Pod(p) => Object::Pod(pod(p, old, &mut problems)),
        Object::Deployment(d) => Object::Deployment(deployment::deployment(d, &mut problems)),
        Object::Event(e) => Object::Event(e),
        other => {
            problems.push(problem(
                "kind",
                format!(
                    "{} objects are written by the control plane, not by users",
                    other.kind()
                ),
            ));
            other
        }
    };
    if problems.is_empty() {
        Ok(Admitted { object, ignored })
    } else {
        Err(problems)
    }
}

fn check_meta(obj: &Object, problems: &mut Vec<Problem>) {
    let meta = obj.meta();
    match meta.name.as_deref() {
        None | Some("") => problems.push(problem(
            "metadata.name",
            "Required value: name or generateName is required",
        )),
        Some(name) => {
            if let Err(why) = names::check_dns1123_label(name, 63) {
                problems.push(problem("metadata.name", format!("{name:?} {why}")));
            } else if obj.kind() == super::Kind::Service
                && !name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                problems.push(problem(
                    "metadata.name",
                    format!(
                        "{name:?} must start with a letter (a DNS-1035 label: it is a DNS name)"
                    ),
                ));
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if let Err(why) = names::check_dns1123_label(ns, 63) {
            problems.push(problem("metadata.namespace", format!("{ns:?} {why}")));
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        if let Err(why) = names::check_label(k, v) {
            problems.push(problem(format!("metadata.labels.{k}"), why));
        }
    }
}

/// Kubernetes' size limits: annotations, the whole object.
fn check_size(obj: &Object, problems: &mut Vec<Problem>) {
    use crate::limits::{count, ANNOTATION_BYTES, OBJECT_BYTES};
    let annotations: usize = obj
        .meta()
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotations > ANNOTATION_BYTES {
        problems.push(problem(
            "metadata.annotations",
            format!(
                "{} bytes of annotations are more than Kubernetes' {} (256 KiB)",
                count(annotations),
                count(ANNOTATION_BYTES)
            ),
        ));
    }
    let size = serde_json::to_vec(obj).map_or(0, |v| v.len());
    if size > OBJECT_BYTES {
        problems.push(problem(
            "",
            format!(
                "the object is {} bytes of JSON, more than the {} (1.5 MiB) an API server stores",
                count(size),
                count(OBJECT_BYTES)
            ),
        ));
    }
}

/// IANA service names, which Kubernetes requires of port names: at most 15 lowercase
/// letters, digits and '-', with a letter, no '-' at either end and no "--".
fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid port name: at most 15 lowercase letters, digits and '-', \
             with at least one letter, no '-' at either end and no \"--\" (an IANA service name)"
        ))
    }
}

fn check_port(path: &str, port: i32, problems: &mut Vec<Problem>) {
    if !(1..=65535).contains(&port) {
        problems.push(problem(
            path,
            format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
        ));
    }
}

fn check_protocol(path: &str, proto: &mut Option<String>, problems: &mut Vec<Problem>) {
    match proto.as_deref() {
        None => *proto = Some("TCP".into()),
        Some("TCP" | "UDP" | "SCTP") => {}
        Some(other) => problems.push(problem(
            path,
            format!("Unsupported value: {other:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
        )),
    }
}

pub(super) fn check_selector(
    path: &str,
    sel: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    for (k, v) in sel {
        if let Err(why) = names::check_label(k, v) {
            problems.push(problem(format!("{path}.{k}"), why));
        }
    }
}

// Long because it checks a Service field by field in the order of Kubernetes'
// ValidateService and its defaulting, so the two read side by side.
fn service(mut s: Service, old: Option<&Object>, problems: &mut Vec<Problem>) -> Service {
    let old = match old {
        Some(Object::Service(o)) => Some(o),
        _ => None,
    };
    let spec = s.spec.get_or_insert_with(Default::default);
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    match ty.as_str() {
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => problems.push(problem(
            "spec.type",
            format!("Unsupported value: {other:?}: supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        )),
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.as_ref().map_or(0, Vec::len);
    if ports > crate::limits::PORTS_PER_SERVICE {
        problems.push(problem(
            "spec.ports",
            format!(
                "{ports} ports are more than the {} a Service may have here (testbed::limits::PORTS_PER_SERVICE)",
                crate::limits::PORTS_PER_SERVICE
            ),
        ));
    }
    if ty == "ExternalName" {
        match spec.external_name.as_deref() {
            None | Some("") => problems.push(problem(
                "spec.externalName",
                "Required value: for type ExternalName",
            )),
            Some(n) => {
                let n = n.trim_end_matches('.');
                if n.len() > 253
                    || n.split('.')
                        .any(|l| names::check_dns1123_label(&l.to_ascii_lowercase(), 63).is_err())
                {
                    problems.push(problem(
                        "spec.externalName",
                        format!("{n:?} is not a DNS name (DNS-1123 labels joined by '.')"),
                    ));
                }
            }
        }
        if spec.cluster_ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
            problems.push(problem(
                "spec.clusterIP",
                "must be empty for type ExternalName",
            ));
        }
    } else if let Some(ip) = spec.cluster_ip.as_deref() {
        if !ip.is_empty() && ip != "None" && ip.parse::<std::net::Ipv4Addr>().is_err() {
            problems.push(problem(
                "spec.clusterIP",
                format!(
                    "{ip:?} is not an IPv4 address, \"None\" (headless) or empty (allocate one)"
                ),
            ));
        }
    }
    // spec.clusterIP is immutable: an update keeps the old one, and may not change it;
    // except that a Service that becomes ExternalName loses it, as Kubernetes clears
    // the fields of the type it leaves (and one that stops being ExternalName is given
    // a new one).
    if let Some(o) = old.and_then(|o| o.spec.as_ref()) {
        let before = o.cluster_ip.clone();
        let kept =
            spec.cluster_ip.as_deref().is_none_or(|ip| ip.is_empty()) || spec.cluster_ip == before;
        if ty == "ExternalName" && kept {
            spec.cluster_ip = None;
            spec.cluster_ips = None;
            spec.ip_families = None;
            spec.ip_family_policy = None;
            spec.internal_traffic_policy = None;
        }
    }
    if let Some(o) = old
        .and_then(|o| o.spec.as_ref())
        .filter(|o| o.type_.as_deref() != Some("ExternalName") && ty != "ExternalName")
    {
        let before = o.cluster_ip.clone();
        match spec.cluster_ip.as_deref() {
            None | Some("") => spec.cluster_ip = before,
            Some(now) if Some(now) != before.as_deref() => problems.push(problem(
                "spec.clusterIP",
                format!(
                    "field is immutable: it is {}, the update asks for {now}",
                    before.as_deref().unwrap_or("unset")
                ),
            )),
            _ => {}
        }
    }
    let ports = spec.ports.get_or_insert_with(Vec::new);
    if ports.is_empty() && ty != "ExternalName" && !headless {
        problems.push(problem("spec.ports", "at least one port is required"));
    }
    let many = ports.len() > 1;
    let mut names_seen = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter_mut().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        check_port(&at("port"), p.port, problems);
        check_protocol(&at("protocol"), &mut p.protocol, problems);
        match p.name.as_deref() {
            None | Some("") if many => problems.push(problem(
                at("name"),
                "Required value: when a Service has more than one port",
            )),
            None | Some("") => {}
            Some(n) => {
                if let Err(why) = check_port_name(n) {
                    problems.push(problem(at("name"), why));
                }
                if !names_seen.insert(n.to_string()) {
                    problems.push(problem(
                        at("name"),
                        format!("{n:?} is used by another port"),
                    ));
                }
            }
        }
        let proto = p.protocol.clone().unwrap_or_default();
        if !seen.insert((p.port, proto.clone())) {
            problems.push(problem(
                at("port"),
                format!("{}/{proto} is declared twice", p.port),
            ));
        }
        match &p.target_port {
            None => p.target_port = Some(IntOrString::Int(p.port)),
            Some(IntOrString::Int(0)) => p.target_port = Some(IntOrString::Int(p.port)),
            Some(IntOrString::Int(t)) => check_port(&at("targetPort"), *t, problems),
            Some(IntOrString::String(n)) => {
                if let Err(why) = check_port_name(n) {
                    problems.push(problem(at("targetPort"), why));
                }
            }
        }
    }
    if let Some(sel) = &spec.selector {
        check_selector("spec.selector", sel, problems);
    }
    match spec
        .session_affinity
        .get_or_insert_with(|| "None".into())
        .as_str()
    {
        "None" => {}
        "ClientIP" => {
            let cfg = spec
                .session_affinity_config
                .get_or_insert_with(Default::default);
            let ip = cfg.client_ip.get_or_insert_with(Default::default);
            let t = *ip.timeout_seconds.get_or_insert(DEFAULT_AFFINITY_SECONDS);
            if !(1..=86400).contains(&t) {
                problems.push(problem(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!("{t} is out of range: 1 to 86400 seconds"),
                ));
            }
        }
        other => problems.push(problem(
            "spec.sessionAffinity",
            format!("{other:?} is not a session affinity: None or ClientIP"),
        )),
    }
    if ty != "ExternalName" {
        let policy = spec
            .internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
        if !matches!(policy.as_str(), "Cluster" | "Local") {
            problems.push(problem(
                "spec.internalTrafficPolicy",
                format!("Unsupported value: {policy:?}: supported values: \"Cluster\", \"Local\""),
            ));
        }
        // Upstream's defaulting and validation: Cluster for a Service reached from
        // outside (a node port, a load balancer, external IPs), nothing for others.
        let external = matches!(ty.as_str(), "NodePort" | "LoadBalancer")
            || spec.external_ips.as_ref().is_some_and(|v| !v.is_empty());
        match (external, spec.external_traffic_policy.as_deref()) {
            (true, None | Some("")) => spec.external_traffic_policy = Some("Cluster".into()),
            (true, Some("Cluster" | "Local")) | (false, None) => {}
            (true, Some(other)) => problems.push(problem(
                "spec.externalTrafficPolicy",
                format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Local\""),
            )),
            (false, Some(_)) => problems.push(problem(
                "spec.externalTrafficPolicy",
                "Invalid value: may only be set for externally-accessible services".to_string(),
            )),
        }
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    s
}

fn probe(path: &str, p: &mut Probe, ports: &BTreeSet<String>, problems: &mut Vec<Problem>) {
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ]
    .iter()
    .filter(|h| **h)
    .count();
    if handlers != 1 {
        problems.push(problem(
            path,
            format!("must have exactly one handler (exec, httpGet, tcpSocket or grpc), it has {handlers}"),
        ));
    }
    if p.grpc.is_some() {
        problems.push(problem(
            format!("{path}.grpc"),
            "gRPC probes are not emulated: use exec, httpGet or tcpSocket",
        ));
    }
    let check_target = |port: &IntOrString, f: &str, problems: &mut Vec<Problem>| match port {
        IntOrString::Int(n) => check_port(&format!("{path}.{f}.port"), *n, problems),
        IntOrString::String(n) if !ports.contains(n) => problems.push(problem(
            format!("{path}.{f}.port"),
            format!("{n:?} names no port of this container"),
        )),
        IntOrString::String(_) => {}
    };
    if let Some(h) = &mut p.http_get {
        check_target(&h.port, "httpGet", problems);
        h.path.get_or_insert_with(|| "/".into());
        h.scheme.get_or_insert_with(|| "HTTP".into());
        if h.scheme.as_deref() != Some("HTTP") {
            problems.push(problem(
                format!("{path}.httpGet.scheme"),
                "only HTTP probes are emulated",
            ));
        }
    }
    if let Some(t) = &p.tcp_socket {
        check_target(&t.port, "tcpSocket", problems);
    }
    if let Some(e) = &p.exec {
        if e.command.as_ref().is_none_or(|c| c.is_empty()) {
            problems.push(problem(format!("{path}.exec.command"), "Required value"));
        }
    }
    for (field, v, min, default) in [
        ("periodSeconds", &mut p.period_seconds, 1, 10),
        ("timeoutSeconds", &mut p.timeout_seconds, 1, 1),
        ("successThreshold", &mut p.success_threshold, 1, 1),
        ("failureThreshold", &mut p.failure_threshold, 1, 3),
        ("initialDelaySeconds", &mut p.initial_delay_seconds, 0, 0),
    ] {
        let n = *v.get_or_insert(default);
        if n < min {
            problems.push(problem(
                format!("{path}.{field}"),
                format!("{n} is below the minimum, {min}"),
            ));
        }
    }
}

fn container(path: &str, c: &mut Container, problems: &mut Vec<Problem>) {
    if let Err(why) = names::check_dns1123_label(&c.name, 63) {
        problems.push(problem(
            format!("{path}.name"),
            format!("{:?} {why}", c.name),
        ));
    }
    let mut port_names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, p) in c.ports.iter_mut().flatten().enumerate() {
        let at = |f: &str| format!("{path}.ports[{i}].{f}");
        check_port(&at("containerPort"), p.container_port, problems);
        check_protocol(&at("protocol"), &mut p.protocol, problems);
        if let Some(n) = &p.name {
            if let Err(why) = check_port_name(n) {
                problems.push(problem(at("name"), why));
            }
            port_names.insert(n.clone());
        }
        if !seen.insert((p.container_port, p.protocol.clone())) {
            problems.push(problem(
                at("containerPort"),
                format!("{} is declared twice", p.container_port),
            ));
        }
    }
    if let Some(p) = &mut c.readiness_probe {
        probe(&format!("{path}.readinessProbe"), p, &port_names, problems);
    }
}

pub(super) fn pod_spec(path: &str, spec: &mut PodSpec, problems: &mut Vec<Problem>) {
    if spec.containers.is_empty() {
        problems.push(problem(
            format!("{path}.containers"),
            "at least one container is required",
        ));
    }
    let mut names_seen = BTreeSet::new();
    for (i, c) in spec.containers.iter_mut().enumerate() {
        if !names_seen.insert(c.name.clone()) {
            problems.push(problem(
                format!("{path}.containers[{i}].name"),
                format!("{:?} is used by another container", c.name),
            ));
        }
        container(&format!("{path}.containers[{i}]"), c, problems);
    }
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
}

fn pod(mut p: Pod, old: Option<&Object>, problems: &mut Vec<Problem>) -> Pod {
    match &mut p.spec {
        None => problems.push(problem("spec", "Required value")),
        Some(spec) => {
            pod_spec("spec", spec, problems);
            super::taints::add_default_tolerations(spec);
        }
    }
    if let Some(Object::Pod(o)) = old {
        // Like Kubernetes: a pod's spec does not change once it exists (labels may).
        let mut want = p.spec.clone();
        if let (Some(w), Some(prev)) = (&mut want, &o.spec) {
            if w.node_name.is_none() {
                w.node_name = prev.node_name.clone();
            }
        }
        if want != o.spec {
            problems.push(problem(
                "spec",
                "pod updates may not change the spec; delete the pod and create it again",
            ));
        }
        p.spec = o.spec.clone();
        p.status = o.status.clone();
    } else {
        p.status = None;
    }
    p
}
