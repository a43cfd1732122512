//! `testbed apply`, `get`, `delete` and `scale`: kubectl's verbs against the testbed's
//! API server.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::client::Client;
use crate::api::server::Action;
use crate::api::socket::{Request, Response};
use crate::api::{Kind, Object};
use crate::yaml::{self, Spans};

/// Reads `file` (`-` for stdin) into manifests, checking each against its
/// Kubernetes type; every problem is reported with its file and line.
fn read_manifests(file: &Path) -> Result<(String, Vec<(Value, Spans)>)> {
    let shown = if file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        file.display().to_string()
    };
    let text = crate::input::read(file).map_err(|e| match e.at {
        Some((line, col)) => anyhow!("{shown}:{line}:{col}: {}", e.message),
        None => anyhow!("{shown}: {}", e.message),
    })?;
    let docs = yaml::load_all(&text).map_err(|e| {
        anyhow!(
            "{shown}:{}:{}: invalid YAML: {}",
            e.pos.line,
            e.pos.col,
            e.message
        )
    })?;
    let docs: Vec<(Value, Spans)> = docs.into_iter().filter(|(v, _)| !v.is_null()).collect();
    if docs.is_empty() {
        bail!("{shown}: no objects in the file");
    }
    let mut problems = Vec::new();
    for (v, spans) in &docs {
        for l in crate::manifest::check(v, spans, "") {
            problems.push(match l.pos {
                Some(p) => format!("{shown}:{}:{}: {}", p.line, p.col, l.message),
                None => format!("{shown}: {}", l.message),
            });
        }
    }
    if !problems.is_empty() {
        bail!("{}\nnothing was applied", problems.join("\n"));
    }
    Ok((shown, docs))
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment => "deployment.apps",
        Kind::EndpointSlice => "endpointslice.discovery.k8s.io",
        Kind::Pod => "pod",
        Kind::Service => "service",
        Kind::Endpoints => "endpoints",
    }
}

pub(super) fn apply(testbed: Option<String>, file: &Path) -> Result<ExitCode> {
    let (shown, docs) = read_manifests(file)?;
    let name = super::pick_testbed(testbed)?;
    let mut client = Client::connect(&name)?;
    let objects: Vec<Value> = docs.iter().map(|(v, _)| v.clone()).collect();
    match client.call(&Request::Apply { objects })? {
        Response::Applied { results } => {
            for r in results {
                let action = match r.action {
                    Action::Created => "created",
                    Action::Configured => "configured",
                    Action::Unchanged => "unchanged",
                };
                let ip = r
                    .cluster_ip
                    .map(|ip| format!(" (clusterIP {ip})"))
                    .unwrap_or_default();
                let ns = if r.key.namespace == "default" {
                    String::new()
                } else {
                    format!(" -n {}", r.key.namespace)
                };
                println!("{}/{}{ns} {action}{ip}", kind_label(r.key.kind), r.key.name);
                for f in r.ignored {
                    println!("  note: {f} is accepted but not emulated (ignored)");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message, problems } => {
            for p in &problems {
                let pos = p
                    .index
                    .and_then(|i| docs.get(i))
                    .and_then(|(_, s)| s.find(&p.path));
                match pos {
                    Some(pos) => eprintln!("{shown}:{}:{}: {p}", pos.line, pos.col),
                    None => eprintln!("{shown}: {p}"),
                }
            }
            bail!("{message}")
        }
        other => Err(super::client::unexpected(other)),
    }
}

/// `KIND/NAME` or `KIND` and `NAME`.
fn kind_and_name(what: &str, name: Option<&str>) -> Result<(Kind, Option<String>)> {
    let (k, n) = match what.split_once('/') {
        Some((k, n)) => (k, Some(n.to_string())),
        None => (what, name.map(str::to_string)),
    };
    let kind = Kind::parse(k).ok_or_else(|| {
        anyhow!("unknown kind {k:?}: use pods, services, endpoints, endpointslices or deployments")
    })?;
    Ok((kind, n))
}

pub(super) fn delete(
    testbed: Option<String>,
    what: &str,
    name: Option<&str>,
    namespace: &str,
) -> Result<ExitCode> {
    let (kind, name) = kind_and_name(what, name)?;
    let name =
        name.ok_or_else(|| anyhow!("name the object: testbed delete {}/NAME", kind.plural()))?;
    let tb = super::pick_testbed(testbed)?;
    match Client::connect(&tb)?.call(&Request::Delete {
        kind,
        namespace: namespace.into(),
        name: name.clone(),
    })? {
        Response::Deleted { .. } => {
            println!("{}/{name} deleted", kind_label(kind));
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message, .. } => bail!("{message}"),
        other => Err(super::client::unexpected(other)),
    }
}

pub(super) fn scale(
    testbed: Option<String>,
    what: &str,
    replicas: i32,
    namespace: &str,
) -> Result<ExitCode> {
    let (kind, name) = kind_and_name(what, None)?;
    if kind != Kind::Deployment {
        bail!("only deployments scale here, not {}", kind.plural());
    }
    let name = name.ok_or_else(|| {
        anyhow!("name the deployment: testbed scale deployment/NAME --replicas N")
    })?;
    let tb = super::pick_testbed(testbed)?;
    match Client::connect(&tb)?.call(&Request::Scale {
        namespace: namespace.into(),
        name: name.clone(),
        replicas,
    })? {
        Response::Applied { .. } => {
            println!("deployment.apps/{name} scaled");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message, .. } => bail!("{message}"),
        other => Err(super::client::unexpected(other)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Wide,
    Name,
}

pub(super) struct GetArgs {
    pub testbed: Option<String>,
    pub what: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub output: Option<Output>,
    pub watch: bool,
}

pub(super) fn get(a: GetArgs) -> Result<ExitCode> {
    let tb = super::pick_testbed(a.testbed)?;
    let mut client = Client::connect(&tb)?;
    if a.what == "nodes" || a.what == "node" || a.what == "no" {
        let nodes = match client.call(&Request::Nodes)? {
            Response::Nodes { nodes } => nodes,
            other => return Err(super::client::unexpected(other)),
        };
        if a.output == Some(Output::Json) {
            println!("{}", serde_json::to_string_pretty(&nodes)?);
            return Ok(ExitCode::SUCCESS);
        }
        let mut rows = vec![vec![
            "NAME".to_string(),
            "INTERNAL-IP".into(),
            "POD-CIDR".into(),
            "KUBE-PROXY".into(),
            "SERVICE-PORTS".into(),
            "LAST-SYNC".into(),
        ]];
        for n in nodes {
            let state = match (&n.last_error, n.synced_revision >= n.store_revision) {
                (Some(e), _) => format!("error: {e}"),
                (None, true) => "in sync".into(),
                (None, false) => format!("behind ({} < {})", n.synced_revision, n.store_revision),
            };
            rows.push(vec![
                n.name,
                n.ip,
                n.pod_cidr,
                state,
                n.service_ports.to_string(),
                format!("{:.1}ms", n.last_sync_ms),
            ]);
        }
        print_table(&rows);
        return Ok(ExitCode::SUCCESS);
    }
    let (kind, name) = kind_and_name(&a.what, a.name.as_deref())?;
    let namespace = a
        .namespace
        .clone()
        .or_else(|| name.as_ref().map(|_| "default".into()));
    let namespace = if a.namespace.as_deref() == Some("*") {
        None
    } else {
        namespace.or(Some("default".into()))
    };
    if a.watch {
        let first_answer = client.call(&Request::Watch { kind, namespace })?;
        let mut first = true;
        let mut next = Some(first_answer);
        while let Some(r) = next.take().map(Ok).or_else(|| client.recv().transpose()) {
            let event = match r? {
                Response::Event { event } => event,
                other => return Err(super::client::unexpected(other)),
            };
            if name.as_deref().is_some_and(|n| n != event.object.name()) {
                continue;
            }
            match a.output {
                Some(Output::Json) => println!("{}", serde_json::to_string(&event)?),
                Some(Output::Yaml) => println!("---\n{}", to_yaml(&serde_json::to_value(&event)?)),
                _ => {
                    let rows = table(
                        kind,
                        std::slice::from_ref(&event.object),
                        a.output == Some(Output::Wide),
                    );
                    let mut rows: Vec<Vec<String>> = rows
                        .into_iter()
                        .map(|mut r| {
                            r.insert(0, String::new());
                            r
                        })
                        .collect();
                    rows[0][0] = "EVENT".into();
                    rows[1][0] = format!("{:?}", event.kind).to_uppercase();
                    if !first {
                        rows.remove(0);
                    }
                    first = false;
                    print_table(&rows);
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let items = match client.call(&Request::Get {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
    })? {
        Response::Objects { items } => items,
        Response::Error { message, .. } => bail!("{message}"),
        other => return Err(super::client::unexpected(other)),
    };
    match a.output {
        Some(Output::Json) => {
            let v: Vec<Value> = items.iter().map(Object::to_value).collect();
            if name.is_some() && v.len() == 1 {
                println!("{}", serde_json::to_string_pretty(&v[0])?);
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": v})
                    )?
                );
            }
        }
        Some(Output::Yaml) => {
            for (i, o) in items.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", to_yaml(&o.to_value()));
            }
        }
        Some(Output::Name) => {
            for o in &items {
                println!("{}/{}", kind_label(kind), o.name());
            }
        }
        _ => {
            if items.is_empty() {
                match namespace.as_deref() {
                    None => eprintln!("No resources found"),
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                }
            } else {
                let mut rows = table(kind, &items, a.output == Some(Output::Wide));
                if namespace.is_none() {
                    // As `kubectl get -A`: a NAMESPACE column first.
                    rows[0].insert(0, "NAMESPACE".into());
                    for (row, o) in rows[1..].iter_mut().zip(&items) {
                        row.insert(0, o.namespace().to_string());
                    }
                }
                print_table(&rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// YAML for `-o yaml`: JSON values written as block YAML.
fn to_yaml(v: &Value) -> String {
    fn scalar(s: &str) -> String {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
            && !matches!(
                s,
                "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
            )
            && s.parse::<f64>().is_err()
            && !s.starts_with(['-', ':', '@']);
        if plain {
            s.to_string()
        } else {
            serde_json::to_string(s).expect("strings serialize")
        }
    }
    fn emit(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, val) in m {
                    match val {
                        Value::Object(c) if !c.is_empty() => {
                            out.push_str(&format!("{pad}{}:\n", scalar(k)));
                            emit(val, indent + 2, out);
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push_str(&format!("{pad}{}:\n", scalar(k)));
                            emit(val, indent, out);
                        }
                        _ => out.push_str(&format!("{pad}{}: {}\n", scalar(k), inline(val))),
                    }
                }
            }
            Value::Array(a) => {
                for item in a {
                    match item {
                        Value::Object(m) if !m.is_empty() => {
                            let mut inner = String::new();
                            emit(item, indent + 2, &mut inner);
                            let inner =
                                inner.replacen(&" ".repeat(indent + 2), &format!("{pad}- "), 1);
                            out.push_str(&inner);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", inline(item))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", inline(other))),
        }
    }
    fn inline(v: &Value) -> String {
        match v {
            Value::String(s) => scalar(s),
            Value::Object(m) if m.is_empty() => "{}".into(),
            Value::Array(a) if a.is_empty() => "[]".into(),
            other => other.to_string(),
        }
    }
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// The items joined by commas, or `empty` (`<none>`) as kubectl shows no items.
fn joined(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(",")
    }
}

/// Endpoints as kubectl lists them: the first three, then how many more
/// (`formatEndpoints` in kubectl's printers), so a row stays short however many.
fn first_three(items: &[String], empty: &str) -> String {
    match items.len() {
        0..=3 => joined(items, empty),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

fn age(o: &Object) -> String {
    let Some(t) = &o.meta().creation_timestamp else {
        return "<unknown>".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t.0.as_second()).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn table(kind: Kind, items: &[Object], wide: bool) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let header: &[&str] = match (kind, wide) {
        (Kind::Pod, false) => &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        (Kind::Pod, true) => &[
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "CONDITIONS",
        ],
        (Kind::Service, false) => &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        (Kind::Service, true) => &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR",
        ],
        (Kind::Endpoints, _) => &["NAME", "ENDPOINTS", "AGE"],
        (Kind::EndpointSlice, _) => &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
        (Kind::Deployment, false) => &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        (Kind::Deployment, true) => &[
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "SELECTOR",
        ],
    };
    rows.push(header.iter().map(|s| s.to_string()).collect());
    for o in items {
        let mut r = vec![o.name().to_string()];
        match o {
            Object::Pod(p) => {
                let st = p.status.clone().unwrap_or_default();
                let containers = p.spec.as_ref().map_or(0, |s| s.containers.len());
                let ready = crate::api::labels::pod_ready(p);
                r.push(format!(
                    "{}/{containers}",
                    if ready { containers } else { 0 }
                ));
                r.push(st.phase.clone().unwrap_or_else(|| "Pending".into()));
                r.push("0".into());
                r.push(age(o));
                if wide {
                    r.push(st.pod_ip.clone().unwrap_or_else(|| "<none>".into()));
                    r.push(
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.clone())
                            .unwrap_or_else(|| "<none>".into()),
                    );
                    let conds: Vec<String> = st
                        .conditions
                        .iter()
                        .flatten()
                        .map(|c| format!("{}={}", c.type_, c.status))
                        .collect();
                    r.push(joined(&conds, "<none>"));
                }
            }
            Object::Service(s) => {
                let spec = s.spec.clone().unwrap_or_default();
                r.push(spec.type_.clone().unwrap_or_default());
                r.push(spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()));
                r.push(
                    spec.external_name
                        .clone()
                        .unwrap_or_else(|| "<none>".into()),
                );
                let ports: Vec<String> = spec
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
                    .collect();
                r.push(joined(&ports, "<none>"));
                r.push(age(o));
                if wide {
                    let sel: Vec<String> = spec
                        .selector
                        .iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    r.push(joined(&sel, "<none>"));
                }
            }
            Object::Endpoints(e) => {
                let mut eps = Vec::new();
                for s in e.subsets.iter().flatten() {
                    for a in s.addresses.iter().flatten() {
                        for p in s.ports.iter().flatten() {
                            eps.push(format!("{}:{}", a.ip, p.port));
                        }
                    }
                }
                r.push(first_three(&eps, "<none>"));
                r.push(age(o));
            }
            Object::EndpointSlice(s) => {
                r.push(s.address_type.clone());
                let ports: Vec<String> = s
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.port.map(|n| n.to_string()))
                    .collect();
                r.push(joined(&ports, "<unset>"));
                let eps: Vec<String> = s
                    .endpoints
                    .iter()
                    .flat_map(|e| e.addresses.clone())
                    .collect();
                r.push(first_three(&eps, "<unset>"));
                r.push(age(o));
            }
            Object::Deployment(d) => {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                r.push(format!("{}/{want}", st.ready_replicas.unwrap_or(0)));
                r.push(st.updated_replicas.unwrap_or(0).to_string());
                r.push(st.available_replicas.unwrap_or(0).to_string());
                r.push(age(o));
                if wide {
                    let sel: Vec<String> = d
                        .spec
                        .iter()
                        .flat_map(|s| s.selector.match_labels.iter().flatten())
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    r.push(sel.join(","));
                }
            }
        }
        rows.push(r);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::first_three;

    #[test]
    fn endpoints_show_three_and_how_many_more_as_kubectl_does() {
        let eps: Vec<String> = (1..=2000).map(|i| format!("10.244.1.{i}:8080")).collect();
        assert_eq!(
            first_three(&eps, "<none>"),
            "10.244.1.1:8080,10.244.1.2:8080,10.244.1.3:8080 + 1997 more..."
        );
        assert_eq!(
            first_three(&eps[..2], "<none>"),
            "10.244.1.1:8080,10.244.1.2:8080"
        );
        assert_eq!(first_three(&[], "<none>"), "<none>");
    }
}
