//! `testbed apply -f FILE`: the manifests checked where they are written (file and
//! line), then sent to the REST API as kubectl sends them (POST a new object, PUT one
//! that exists), first all as a dry run (`?dryRun=All`, every check the API server
//! makes) so that a file with one bad object changes nothing.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use super::client::{Call, Client, Reply, JSON};
use super::objects::{kind_label, path};
use crate::api::Kind;
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

/// One manifest on its way: what it is, and the version of the object it replaces.
struct Write<'a> {
    kind: Kind,
    namespace: String,
    name: String,
    body: &'a Value,
    spans: &'a Spans,
    /// The resource version of the object there now; `None` when there is none.
    existing: Option<String>,
}

impl Write<'_> {
    /// `Service default/web`, as problems name it.
    fn what(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }

    /// POST when new, PUT when it exists; a dry run when `dry`.
    fn send(&self, client: &mut Client, dry: bool) -> Result<Reply> {
        let query = if dry { "?dryRun=All" } else { "" };
        let (method, at) = match self.existing {
            None => ("POST", path(self.kind, Some(&self.namespace), None)),
            Some(_) => (
                "PUT",
                path(self.kind, Some(&self.namespace), Some(&self.name)),
            ),
        };
        client.call(&Call::with(
            method,
            &format!("{at}{query}"),
            JSON,
            self.body,
        ))
    }

    /// A refusal, a line per cause, each at its place in the file.
    fn problems(&self, shown: &str, reply: &Reply) -> Vec<String> {
        let at = |field: &str, text: String| match self.spans.find(field) {
            Some(p) => format!("{shown}:{}:{}: {}: {text}", p.line, p.col, self.what()),
            None => format!("{shown}: {}: {text}", self.what()),
        };
        let causes = reply.body["details"]["causes"].as_array();
        match causes.filter(|c| !c.is_empty()) {
            Some(causes) => causes
                .iter()
                .map(|c| {
                    let field = c["field"].as_str().unwrap_or_default();
                    let message = c["message"].as_str().unwrap_or_default().to_string();
                    match field {
                        "" => at("", message),
                        f => at(f, format!("{f}: {message}")),
                    }
                })
                .collect(),
            None => vec![at("", format!("{:#}", reply.error()))],
        }
    }
}

/// The manifests as writes, each knowing whether its object exists.
fn plan<'a>(
    client: &mut Client,
    shown: &str,
    docs: &'a [(Value, Spans)],
) -> Result<Vec<Write<'a>>> {
    let mut writes: Vec<Write> = Vec::new();
    let mut seen = HashMap::new();
    for (i, (body, spans)) in docs.iter().enumerate() {
        let text = |p: &str| body.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let kind = Kind::parse(text("/kind"))
            .ok_or_else(|| anyhow!("{shown}: object {}: an unknown kind", i + 1))?;
        let namespace = Some(text("/metadata/namespace"))
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        let mut w = Write {
            kind,
            namespace: namespace.to_string(),
            name: text("/metadata/name").to_string(),
            body,
            spans,
            existing: None,
        };
        if let Some(first) = seen.insert((kind, w.namespace.clone(), w.name.clone()), i) {
            let pos = spans.find("metadata.name").map(|p| (p.line, p.col));
            let (line, col) = pos.unwrap_or((1, 1));
            bail!(
                "{shown}:{line}:{col}: {}: appears twice in the file (also object {}); nothing was applied",
                w.what(),
                first + 1
            );
        }
        if !w.name.is_empty() {
            let got = client.call(&Call::get(&path(kind, Some(namespace), Some(&w.name))))?;
            match got.status {
                200 => {
                    w.existing = got.body["metadata"]["resourceVersion"]
                        .as_str()
                        .map(str::to_string)
                }
                404 => {}
                _ => return Err(got.error()),
            }
        }
        writes.push(w);
    }
    Ok(writes)
}

pub(super) fn apply(testbed: Option<String>, file: &Path) -> Result<ExitCode> {
    let (shown, docs) = read_manifests(file)?;
    let name = super::pick_testbed(testbed)?;
    let mut client = Client::connect(&name)?;
    let writes = plan(&mut client, &shown, &docs)?;
    // Every object first as a dry run: the API server's checks, and nothing written
    // unless all pass.
    let mut problems = Vec::new();
    for w in &writes {
        let reply = w.send(&mut client, true)?;
        if !reply.ok() {
            problems.extend(w.problems(&shown, &reply));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("the API server refused the request; nothing was changed");
    }
    for (done, w) in writes.iter().enumerate() {
        let reply = w.send(&mut client, false)?;
        if !reply.ok() {
            // Something changed between the dry run and now.
            for p in w.problems(&shown, &reply) {
                eprintln!("{p}");
            }
            bail!(
                "the API server refused it; the {done} objects before it in the file were applied"
            );
        }
        let stored = &reply.body;
        let action = match &w.existing {
            None => "created",
            Some(rv) if stored["metadata"]["resourceVersion"].as_str() == Some(rv) => "unchanged",
            Some(_) => "configured",
        };
        let ip = stored["spec"]["clusterIP"]
            .as_str()
            .filter(|ip| *ip != "None" && !ip.is_empty())
            .map(|ip| format!(" (clusterIP {ip})"))
            .unwrap_or_default();
        let ns = if w.namespace == "default" {
            String::new()
        } else {
            format!(" -n {}", w.namespace)
        };
        let shown_name = stored["metadata"]["name"].as_str().unwrap_or(&w.name);
        println!("{}/{shown_name}{ns} {action}{ip}", kind_label(w.kind));
        for note in &reply.warnings {
            println!("  note: {note}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
