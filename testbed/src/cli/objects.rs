//! `testbed apply`, `get`, `delete` and `scale`: kubectl's verbs against the testbed's
//! API server.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::client::Client;
use super::print::{print_table, table, to_yaml};
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
        Kind::Event => "event",
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
        Some((k, n)) if n.contains('/') => {
            let (ns, rest) = n.split_once('/').unwrap_or_default();
            bail!(
                "{what:?}: arguments in resource/name form may not have more than one slash (as kubectl has it); \
                 name the namespace with -n: {k}/{rest} -n {ns}"
            )
        }
        Some(_) if name.is_some() => bail!(
            "{what:?}: there is no need to name the kind separately when passing KIND/NAME (as kubectl has it)"
        ),
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

// Long because it is kubectl get's modes (one object, a list, a watch) times its outputs,
// each arm short.
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
