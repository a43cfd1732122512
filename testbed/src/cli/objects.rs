//! `testbed get`, `delete` and `scale`: kubectl's verbs as the REST API's requests,
//! sent over the testbed's local socket (`apply` is in [`super::apply`]).

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use super::client::{Call, Client, JSON, TABLE};
use super::print::{print_table, table_rows, to_yaml};
use crate::api::Kind;
use crate::rest::resources::Resource;

pub(super) fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment => "deployment.apps",
        Kind::ReplicaSet => "replicaset.apps",
        Kind::Event => "event",
        Kind::EndpointSlice => "endpointslice.discovery.k8s.io",
        Kind::Pod => "pod",
        Kind::Service => "service",
        Kind::Endpoints => "endpoints",
        Kind::Node => "node",
        Kind::Lease => "lease.coordination.k8s.io",
    }
}

/// One path segment, percent-encoded (a name that is not a DNS name still reaches
/// the API server whole, to be refused there with why).
fn segment(s: &str) -> String {
    let mut out = String::new();
    let all_dots = s.chars().all(|c| c == '.');
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(b as char),
            b'.' if !all_dots => out.push('.'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The REST path of `kind` objects in `namespace` (every namespace for `None`), or
/// of the one named.
pub(super) fn path(kind: Kind, namespace: Option<&str>, name: Option<&str>) -> String {
    let r = Resource::of(kind);
    let mut p = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if let Some(ns) = namespace {
        p.push_str(&format!("/namespaces/{}", segment(ns)));
    }
    p.push_str(&format!("/{}", r.plural));
    if let Some(n) = name {
        p.push_str(&format!("/{}", segment(n)));
    }
    p
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
    let at = path(kind, Some(namespace), Some(&name));
    let reply = Client::connect(&tb)?.call(&Call {
        method: "DELETE",
        ..Call::get(&at)
    })?;
    if !reply.ok() {
        return Err(reply.error());
    }
    println!("{}/{name} deleted", kind_label(kind));
    // A pod deleted gracefully is gone when its kubelet has stopped it: waited for,
    // as `kubectl delete` waits.
    if let Some(grace) = reply.body["metadata"]["deletionGracePeriodSeconds"].as_u64() {
        let deadline =
            std::time::Instant::now() + std::time::Duration::from_secs(grace.min(3600) + 10);
        loop {
            let now = Client::connect(&tb)?.call(&Call::get(&at))?;
            if now.status == 404 {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "{}/{name} is still terminating after its grace period of {grace} s",
                    kind_label(kind)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    Ok(ExitCode::SUCCESS)
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
    if replicas < 0 {
        bail!("--replicas {replicas} is negative");
    }
    let tb = super::pick_testbed(testbed)?;
    // As kubectl scale: a merge patch of the scale subresource.
    let at = format!("{}/scale", path(kind, Some(namespace), Some(&name)));
    let patch = json!({ "spec": { "replicas": replicas } });
    let reply = Client::connect(&tb)?.call(&Call::with(
        "PATCH",
        &at,
        "application/merge-patch+json",
        &patch,
    ))?;
    if !reply.ok() {
        return Err(reply.error());
    }
    println!("deployment.apps/{name} scaled");
    Ok(ExitCode::SUCCESS)
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

/// `testbed get nodes`: each node, its STATUS (from its Node object, as `kubectl
/// get nodes`) and its kube-proxy's state (the testbed's own path).
fn nodes(client: &mut Client, output: Option<Output>) -> Result<ExitCode> {
    let reply = client.call(&Call::get("/testbed/v1/nodes"))?;
    if !reply.ok() {
        return Err(reply.error());
    }
    if output == Some(Output::Json) {
        println!("{}", serde_json::to_string_pretty(&reply.body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let nodes: Vec<crate::proxy::node::NodeStatus> = serde_json::from_value(reply.body)?;
    let objects = client.call(&Call::get("/api/v1/nodes"))?;
    let status = |name: &str| {
        items(&objects.body, Kind::Node)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<k8s_openapi::api::core::v1::Node>(v).ok())
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map_or("Unknown".to_string(), |n| {
                crate::api::labels::node_status_column(&n)
            })
    };
    let mut rows = vec![vec![
        "NAME".to_string(),
        "STATUS".into(),
        "INTERNAL-IP".into(),
        "POD-CIDR".into(),
        "MODE".into(),
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
            n.name.clone(),
            status(&n.name),
            n.ip,
            n.pod_cidr,
            n.mode,
            state,
            n.service_ports.to_string(),
            format!("{:.1}ms", n.last_sync_ms),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

/// `get -w`: the watch's events as they come, a row each (with the event's type), or
/// the events whole for `-o json|yaml`.
fn watch(client: &mut Client, at: &str, output: Option<Output>) -> Result<ExitCode> {
    let whole = matches!(output, Some(Output::Json | Output::Yaml));
    let call = Call {
        accept: if whole { JSON } else { TABLE },
        ..Call::get(at)
    };
    let mut first = true;
    client.watch(&call, |event| {
        if event["type"] == "ERROR" {
            bail!(
                "the watch ended: {}",
                event["object"]["message"].as_str().unwrap_or("an error")
            );
        }
        match output {
            Some(Output::Json) => println!("{}", serde_json::to_string(&event)?),
            Some(Output::Yaml) => println!("---\n{}", to_yaml(&event)),
            _ => {
                let mut rows = table_rows(&event["object"], output == Some(Output::Wide), false);
                for (i, r) in rows.iter_mut().enumerate() {
                    let ty = event["type"].as_str().unwrap_or_default();
                    r.insert(0, if i == 0 { "EVENT".into() } else { ty.into() });
                }
                if !first {
                    rows.remove(0);
                }
                first = false;
                print_table(&rows);
            }
        }
        Ok(true)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A list's items as objects of their own: with their kind and API version, as
/// `kubectl get -o json` shows them.
fn items(list: &Value, kind: Kind) -> Vec<Value> {
    let r = Resource::of(kind);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let mut o = o.clone();
            o["apiVersion"] = json!(r.group_version());
            o["kind"] = json!(r.kind_name);
            o
        })
        .collect()
}

// Long because it is kubectl get's modes (one object, a list, a watch) times its outputs,
// each arm short.
pub(super) fn get(a: GetArgs) -> Result<ExitCode> {
    let tb = super::pick_testbed(a.testbed)?;
    let mut client = Client::connect(&tb)?;
    if a.what == "nodes" || a.what == "node" || a.what == "no" {
        return nodes(&mut client, a.output);
    }
    let (kind, name) = kind_and_name(&a.what, a.name.as_deref())?;
    let namespace = match a.namespace.as_deref() {
        Some("*") => None,
        Some(ns) => Some(ns.to_string()),
        None => Some("default".to_string()),
    };
    if a.watch {
        let mut at = format!("{}?watch=true", path(kind, namespace.as_deref(), None));
        if let Some(n) = &name {
            at.push_str(&format!("&fieldSelector=metadata.name%3D{}", segment(n)));
        }
        return watch(&mut client, &at, a.output);
    }
    let at = match &name {
        Some(n) => path(
            kind,
            Some(namespace.as_deref().unwrap_or("default")),
            Some(n),
        ),
        None => path(kind, namespace.as_deref(), None),
    };
    let table = !matches!(a.output, Some(Output::Json | Output::Yaml | Output::Name));
    let reply = client.call(&Call {
        accept: if table { TABLE } else { JSON },
        ..Call::get(&at)
    })?;
    if !reply.ok() {
        return Err(reply.error());
    }
    let objects = match (&name, table) {
        (_, true) => Vec::new(),
        (Some(_), false) => vec![reply.body.clone()],
        (None, false) => items(&reply.body, kind),
    };
    match a.output {
        Some(Output::Json) if name.is_some() => {
            println!("{}", serde_json::to_string_pretty(&objects[0])?)
        }
        Some(Output::Json) => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"apiVersion": "v1", "kind": "List", "items": objects})
            )?
        ),
        Some(Output::Yaml) => {
            for (i, o) in objects.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", to_yaml(o));
            }
        }
        Some(Output::Name) => {
            for o in &objects {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                println!("{}/{n}", kind_label(kind));
            }
        }
        _ => {
            let rows = table_rows(
                &reply.body,
                a.output == Some(Output::Wide),
                namespace.is_none(),
            );
            if rows.len() > 1 {
                print_table(&rows);
            } else {
                match namespace.as_deref() {
                    None => eprintln!("No resources found"),
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
